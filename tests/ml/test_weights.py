"""The weights store: checkpoint formats accepted, every bad file refused with a message naming what is wrong,
and loads checked against the recorded architecture and sha256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from service.ml.backbones import build_reference, build_trunk
from service.ml.weights import (
    WeightsError,
    get_weights,
    import_weights,
    list_weights,
    load_pretrained,
    read_checkpoint,
)


@pytest.fixture(scope="module")
def resnet18_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_reference("resnet18", 5).state_dict()


def _trunk_equal(store: Path, name: str, sd: dict[str, torch.Tensor]) -> None:
    trunk = build_trunk("resnet18")
    load_pretrained(trunk, store, name, "resnet18")
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, sd[k]) or (k.endswith("num_batches_tracked") and int(v) == 0), k


def test_formats_accepted(tmp_path: Path, resnet18_sd):
    store = tmp_path / "store"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in resnet18_sd.items()}}, tmp_path / "a.pth")
    save_file({k: v.contiguous() for k, v in resnet18_sd.items()}, str(tmp_path / "b.safetensors"))
    old = {k: v for k, v in resnet18_sd.items() if not k.endswith("num_batches_tracked")}  # pre-2018 checkpoint
    torch.save(old, tmp_path / "c.pt")
    trunk_only = {k: v for k, v in resnet18_sd.items() if not k.startswith("fc.")}  # no classifier at all
    torch.save(trunk_only, tmp_path / "d.pth")
    for name, file in (("a", "a.pth"), ("b", "b.safetensors"), ("c", "c.pt"), ("d", "d.pth")):
        info = import_weights(tmp_path / file, "resnet18", name, store)
        assert info.source == file and info.parameters == 11_176_512
        _trunk_equal(store, name, resnet18_sd)  # "c": num_batches_tracked filled in by BatchNorm (0)
    assert [i.name for i in list_weights(store)] == ["a", "b", "c", "d"]
    meta = json.loads((store / "a.json").read_text())
    assert meta["arch"] == "resnet18" and meta["dropped"] == ["fc.bias", "fc.weight"]
    assert sorted(p.name for p in store.iterdir()) == sorted(f"{n}.{e}" for n in "abcd" for e in ("json", "safetensors"))


def test_half_precision_file_is_stored_as_float32(tmp_path: Path, resnet18_sd):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in resnet18_sd.items()}
    torch.save(half, tmp_path / "h.pth")
    import_weights(tmp_path / "h.pth", "resnet18", "h", tmp_path / "s")
    trunk = build_trunk("resnet18")
    load_pretrained(trunk, tmp_path / "s", "h", "resnet18")
    assert trunk.conv1.weight.dtype == torch.float32
    assert torch.equal(trunk.conv1.weight, half["conv1.weight"].float())


def test_wrong_architecture_names_keys_and_shapes(tmp_path: Path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    with pytest.raises(WeightsError) as err:
        import_weights(tmp_path / "r18.pth", "resnet34", "x", tmp_path / "s")
    assert "does not fit resnet34" in str(err.value) and "missing" in str(err.value)
    assert "layer1.2.conv1.weight" in str(err.value)
    with pytest.raises(WeightsError) as err:
        import_weights(tmp_path / "r18.pth", "resnet50", "x", tmp_path / "s")
    assert "shape mismatch" in str(err.value) and "layer1.0.conv1.weight (file (64, 64, 3, 3)" in str(err.value)
    bad = dict(resnet18_sd)
    bad["layer2.0.bn1.running_var"] = torch.ones(7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"layer2\.0\.bn1\.running_var \(file \(7,\), resnet18 \(128,\)\)"):
        import_weights(tmp_path / "bad.pth", "resnet18", "x", tmp_path / "s")
    extra = {**resnet18_sd, "aux.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="unexpected 1 key.*aux.weight"):
        import_weights(tmp_path / "extra.pth", "resnet18", "x", tmp_path / "s")
    assert list_weights(tmp_path / "s") == [] and not any((tmp_path / "s").iterdir())


def test_refused_files(tmp_path: Path, resnet18_sd):
    s = tmp_path / "s"
    torch.save(build_reference("resnet18", 5), tmp_path / "model.pth")  # a pickled module, not a state dict
    with pytest.raises(WeightsError, match="weights_only=True.*save model.state_dict"):
        import_weights(tmp_path / "model.pth", "resnet18", "x", s)
    torch.save({"conv1.weight": resnet18_sd["conv1.weight"], "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match="non-tensor entries: epoch"):
        import_weights(tmp_path / "mixed.pth", "resnet18", "x", s)
    nan = dict(resnet18_sd)
    nan["layer1.0.conv2.weight"] = torch.full_like(nan["layer1.0.conv2.weight"], float("nan"))
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match="non-finite values in: layer1.0.conv2.weight"):
        import_weights(tmp_path / "nan.pth", "resnet18", "x", s)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="junk.safetensors: not a readable safetensors file"):
        read_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pth")
    torch.save(resnet18_sd, tmp_path / "ok.pth")
    with pytest.raises(WeightsError, match="'vgg16' is not a backbone; allowed: resnet18"):
        import_weights(tmp_path / "ok.pth", "vgg16", "x", s)
    for name in ("", "../evil", ".hidden", "a/b", "x" * 101):
        with pytest.raises(WeightsError, match="name: "):
            import_weights(tmp_path / "ok.pth", "resnet18", name, s)
    import_weights(tmp_path / "ok.pth", "resnet18", "ok", s)
    with pytest.raises(WeightsError, match="'ok' are already installed"):
        import_weights(tmp_path / "ok.pth", "resnet18", "ok", s)
    import_weights(tmp_path / "ok.pth", "resnet18", "ok", s, replace=True)
    assert [i.name for i in list_weights(s)] == ["ok"]


def test_load_checks_arch_and_sha256(tmp_path: Path, resnet18_sd):
    s = tmp_path / "s"
    torch.save(resnet18_sd, tmp_path / "ok.pth")
    import_weights(tmp_path / "ok.pth", "resnet18", "ok", s)
    with pytest.raises(WeightsError, match="'ok' are for resnet18, not model.backbone resnet34"):
        load_pretrained(build_trunk("resnet34"), s, "ok", "resnet34")
    with pytest.raises(WeightsError, match="'nope' are not installed .*installed: ok"):
        get_weights(s, "nope")
    with pytest.raises(WeightsError, match="not set"):
        get_weights(None, "ok")
    data = bytearray((s / "ok.safetensors").read_bytes())
    data[-1] ^= 0xFF  # tamper with one byte of the weights
    (s / "ok.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 differs"):
        load_pretrained(build_trunk("resnet18"), s, "ok", "resnet18")
