"""Backbones inside the engine: every architecture trains with heads, masks, gating and a weighting strategy,
predicts, exports to ONNX; pretrained weights from the store are used and recorded; frozen epochs, the backbone
learning-rate multiplier and resume behave as specified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.ml.artifact import load_artifact, save_artifact
from service.ml.backbones import BACKBONES, build_reference
from service.ml.data import Labels, TrainingData
from service.ml.inference import Predictor
from service.ml.network import MultiTaskCNN
from service.ml.spec import SpecError, parse_spec
from service.ml.train import TrainingCancelled, train
from service.ml.weights import WeightsError, check_pretrained, import_weights

SIZE = 32


def make_spec(arch: str, **training) -> dict:
    return {
        "tasks": [{"name": "kind", "type": "multiclass", "classes": ["a", "b", "c"]},
                  {"name": "has_box", "type": "binary"},
                  {"name": "box", "type": "regression", "gate": {"task": "has_box"}}],
        "weighting": {"strategy": "uncertainty"},
        "model": {"backbone": arch, "image_size": SIZE, "channels": 3, "head_hidden": 16},
        "training": {"epochs": 1, "batch_size": 8, "val_fraction": 0.25, "seed": 0, "mixed_precision": "none",
                     **training},
    }


def make_data(n: int = 24, channels: int = 3, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    has = rng.random(n) < 0.5
    return TrainingData(
        images=rng.integers(0, 256, (n, SIZE, SIZE, channels), dtype=np.uint8),
        labels={"kind": Labels(rng.integers(0, 3, n).astype(np.int64), rng.random(n) < 0.8),  # 20% unlabelled
                "has_box": Labels(has.astype(np.float32), np.ones(n, bool)),
                "box": Labels(rng.normal(5, 2, n).astype(np.float32), has)},
    )


def install(tmp_path: Path, arch: str, name: str = "ref", seed: int = 1) -> dict:
    torch.manual_seed(seed)
    net = build_reference(arch, 10)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so loading them is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / f"{name}.pth")
    import_weights(tmp_path / f"{name}.pth", arch, name, tmp_path / "store")
    return {k: v for k, v in net.state_dict().items() if not k.startswith(BACKBONES[arch].classifier_prefix)}


def backbone_state(state: dict) -> dict:
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_every_backbone_trains_predicts_and_exports(arch, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from service.ml.export import check_onnx, export_onnx

    spec = parse_spec(make_spec(arch))
    result = train(spec, make_data(), device="cpu")
    assert result.pretrained is None
    assert set(backbone_state(result.state_dict)) == set(build_reference(arch, 1).state_dict()) - {
        k for k in build_reference(arch, 1).state_dict() if k.startswith(BACKBONES[arch].classifier_prefix)}
    assert np.isfinite(result.history[-1]["train"]["kind"]["loss"])
    pred = Predictor.from_result(result)
    images = make_data(6, seed=5).images
    rows = pred.predict_arrays(images)
    assert len(rows) == 6 and all(set(r) == {"kind", "has_box", "box"} for r in rows)
    for r in rows:  # gating unchanged: box is suppressed exactly where has_box is predicted false
        assert (r["box"].get("gated") is not None) == (r["has_box"]["label"] is False) or "value" in r["box"]
    onnx_bytes = export_onnx(spec, result.state_dict, result.normalization)
    report = check_onnx(onnx_bytes, pred, images)
    assert report["gate_decisions_identical"] and max(report["max_abs_diff"].values()) <= 1e-4


def test_pretrained_frozen_epochs_and_artifact(tmp_path: Path):
    arch = "resnet18"
    ref = install(tmp_path, arch)
    spec = parse_spec(make_spec(arch, epochs=2, freeze_backbone_epochs=1, backbone_lr_multiplier=0.5,
                                schedule="none", val_fraction=0.0))  # no validation: the last epoch is kept
    spec = parse_spec({**spec.to_json_dict(), "model": {**spec.model.model_dump(), "pretrained": "ref"}})
    seen = []
    frozen = train(parse_spec({**spec.to_json_dict(), "training": {**spec.training.model_dump(), "epochs": 1}}),
                   make_data(), device="cpu", weights_dir=tmp_path / "store")
    # after one frozen epoch the backbone (weights AND BatchNorm statistics) is exactly the imported one
    got = backbone_state(frozen.state_dict)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    assert frozen.pretrained["name"] == "ref" and frozen.pretrained["arch"] == arch
    init = MultiTaskCNN(spec).state_dict()
    assert not torch.equal(frozen.state_dict["heads.0.3.weight"], init["heads.0.3.weight"])  # the heads moved

    full = train(spec, make_data(), device="cpu", weights_dir=tmp_path / "store", on_epoch=seen.append)
    moved = backbone_state(full.state_dict)
    assert not torch.equal(moved["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])  # epoch 2 unfreezes
    assert [e["lr"] for e in seen] == [1e-3, 1e-3]

    save_artifact(full, tmp_path / "art")
    art = load_artifact(tmp_path / "art")
    meta = art.meta["backbone"]
    assert meta["arch"] == arch and meta["pretrained"]["sha256"] == full.pretrained["sha256"]
    assert meta["input_normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                           "grey_to_rgb": False}
    assert torch.equal(art.state_dict["pixel_mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))
    images = make_data(5, seed=9).images
    a, b = Predictor.from_result(full).outputs(images), Predictor.load(tmp_path / "art").outputs(images)
    for t in a:
        np.testing.assert_allclose(a[t], b[t], rtol=0, atol=1e-5)


def test_backbone_learning_rate_multiplier():
    from service.ml.train.loop import Run

    spec = parse_spec(make_spec("mobilenet_v3_large", backbone_lr_multiplier=0.1, learning_rate=0.01))
    run = Run(spec, make_data(), torch.device("cpu"))
    trunk = {id(p) for p in run.model.trunk_parameters()}
    lrs = {}
    for g in run.opt.param_groups:
        for p in g["params"]:
            lrs[id(p)] = g["lr"]
    assert [round(x, 12) for x in {lrs[i] for i in trunk}] == [0.001]
    heads = {id(p) for p in run.model.heads.parameters()}
    assert {lrs[i] for i in heads} == {0.01}
    assert len(trunk) + len(heads) + len(list(run.weighting.parameters())) == len(lrs)


def test_resume_through_frozen_epochs_is_identical(tmp_path: Path):
    ref_dir = tmp_path / "w"
    ref_dir.mkdir()
    install(ref_dir, "resnet18", "r")
    spec_d = make_spec("resnet18", epochs=3, freeze_backbone_epochs=2)
    spec_d["model"]["pretrained"] = "r"
    spec = parse_spec(spec_d)
    data = make_data()
    whole = train(spec, data, device="cpu", weights_dir=ref_dir / "store")
    epochs = []

    def stop() -> bool:
        return len(epochs) >= 1

    with pytest.raises(TrainingCancelled):
        train(spec, data, device="cpu", weights_dir=ref_dir / "store", checkpoint_dir=tmp_path / "ck",
              on_epoch=epochs.append, should_stop=stop)
    resumed = train(spec, data, device="cpu", weights_dir=ref_dir / "store", checkpoint_dir=tmp_path / "ck")
    assert resumed.best_epoch == whole.best_epoch
    for k, v in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[k], v), k


def test_grey_images_on_a_standard_backbone():
    spec_d = make_spec("mobilenet_v3_large")
    spec_d["model"]["channels"] = 1
    result = train(parse_spec(spec_d), make_data(channels=1), device="cpu")
    out = Predictor.from_result(result).outputs(make_data(4, channels=1, seed=3).images)
    assert out["kind"].shape == (4, 3) and np.isfinite(out["kind"]).all()


def test_missing_or_wrong_pretrained_weights(tmp_path: Path):
    install(tmp_path, "resnet18", "r18")
    spec_d = make_spec("resnet34")
    spec_d["model"]["pretrained"] = "r18"
    spec = parse_spec(spec_d)
    with pytest.raises(SpecError, match="model.pretrained: weights 'r18' are for resnet18, not model.backbone resnet34"):
        check_pretrained(tmp_path / "store", spec)
    with pytest.raises(WeightsError, match="are for resnet18"):
        train(spec, make_data(), device="cpu", weights_dir=tmp_path / "store")
    spec_d["model"]["pretrained"] = "nope"
    with pytest.raises(SpecError, match="'nope' are not installed .*installed: r18"):
        check_pretrained(tmp_path / "store", parse_spec(spec_d))
    check_pretrained(tmp_path / "store", parse_spec(make_spec("resnet34")))  # nothing named: nothing to check
    with pytest.raises(SpecError, match="model.pretrained: needs a standard backbone"):
        parse_spec({**make_spec("headwise"), "model": {"pretrained": "r18"}})
    with pytest.raises(SpecError, match="model.backbone: 'vgg16' is not allowed; allowed: headwise, resnet18"):
        parse_spec({**make_spec("headwise"), "model": {"backbone": "vgg16"}})


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_network_builds_on_the_meta_device(arch):
    """The memory estimator (resource guards) builds MultiTaskCNN(spec) on the meta device: no weights are read."""
    spec = parse_spec({**make_spec(arch), "model": {"backbone": arch, "image_size": 224, "pretrained": "anything"}})
    with torch.device("meta"):
        net = MultiTaskCNN(spec)
        out = net(torch.empty(2, 3, 224, 224))
    assert out["kind"].shape == (2, 3) and out["kind"].device.type == "meta"
