"""Backbone checks against the real third-party libraries, where they are installed (the GPU machine has
torchvision and timm; CI and the CPU machines do not, and there the checks report "skipped").

    python bench/gpu_backbones.py [--json out.json]

torchvision: for each architecture, torchvision.models.<arch>(weights=None) with BatchNorm statistics set from
random data, its state dict saved as .pth, imported with import_weights (every key and shape checked), loaded
into the engine's trunk (strict=True, sha256-checked): pooled features and full-network logits must equal
torchvision's (max |diff| reported; CPU, fp32).
timm: resnet18/resnet50 (same names as torchvision) must import and match timm's pooled features;
mobilenetv3_large_100 (timm's own layout: conv_stem, blocks.*) is expected to be refused with a clear message.
No network access: weights=None / pretrained=False, random weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import emit  # noqa: E402
from service.ml.backbones import BACKBONES, build_reference, build_trunk  # noqa: E402
from service.ml.weights import WeightsError, import_weights, load_pretrained  # noqa: E402


def calibrate(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(8, 3, 96, 96))
    return net.eval()


def compare(arch: str, net: nn.Module, features, store: Path, tag: str) -> dict:
    src = store.parent / f"{tag}.pth"
    torch.save(net.state_dict(), src)
    t0 = time.perf_counter()
    import_weights(src, arch, tag, store)
    trunk = build_trunk(arch)
    load_pretrained(trunk, store, tag, arch)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        want, got = features(net, x), trunk.eval()(x)
        out = {"import_s": round(time.perf_counter() - t0, 2),
               "max_abs_diff_features": float((want - got).abs().max())}
        classes = [v for k, v in net.state_dict().items() if k.startswith(BACKBONES[arch].classifier_prefix)]
        if classes:
            full = build_reference(arch, classes[-1].shape[0])
            full.load_state_dict(net.state_dict(), strict=True)
            out["max_abs_diff_logits"] = float((full.eval()(x) - net(x)).abs().max())
    out["identical"] = all(v == 0.0 for k, v in out.items() if k.startswith("max_abs"))
    return out


def tv_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    got = {}
    h = net.avgpool.register_forward_hook(lambda _m, _i, o: got.setdefault("f", o.flatten(1)))
    net(x)
    h.remove()
    return got["f"]


def check_torchvision(store: Path) -> dict:
    try:
        import torchvision
    except ImportError:
        return {"skipped": "torchvision is not installed"}
    out: dict = {"version": torchvision.__version__}
    for arch in BACKBONES:
        net = calibrate(getattr(torchvision.models, arch)(weights=None))
        out[arch] = compare(arch, net, tv_features, store, f"tv-{arch}")
    return out


def check_timm(store: Path) -> dict:
    try:
        import timm
    except ImportError:
        return {"skipped": "timm is not installed"}
    out: dict = {"version": timm.__version__}
    for name in ("resnet18", "resnet50"):
        net = calibrate(timm.create_model(name, pretrained=False))
        out[name] = compare(name, net, lambda n, x: n.forward_head(n.forward_features(x), pre_logits=True),
                            store, f"timm-{name}")
    net = timm.create_model("mobilenetv3_large_100", pretrained=False)
    torch.save(net.state_dict(), store.parent / "timm-mnv3.pth")
    try:
        import_weights(store.parent / "timm-mnv3.pth", "mobilenet_v3_large", "timm-mnv3", store)
        out["mobilenetv3_large_100"] = {"refused": False}
    except WeightsError as exc:
        out["mobilenetv3_large_100"] = {"refused": True, "message": str(exc)[:300]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(min(8, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        result = {"benchmark": "backbone_checks", "torchvision": check_torchvision(store),
                  "timm": check_timm(store)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
