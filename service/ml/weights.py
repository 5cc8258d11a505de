"""The pretrained-weights store: an operator-managed directory (HEADWISE_WEIGHTS_DIR) of trunk weights.

Each installed entry NAME is two files: NAME.safetensors (the trunk's state dict in torchvision's names, no
classifier) and NAME.json ({"name", "arch", "sha256", "source", "parameters", "imported_at", ...}); the JSON is
written last, so an entry without it is not installed. Training never downloads anything: `model.pretrained`
names an entry here, and its sha256 is checked on every load.

    info = import_weights(Path("resnet50-11ad3fa6.pth"), "resnet50", "imagenet-resnet50", root)
    info = load_pretrained(trunk, root, "imagenet-resnet50", arch="resnet50")   # strict, sha256-checked
    check_pretrained(root, spec)    # the API, at job creation: no torch, SpecError naming model.pretrained

torch and safetensors are imported inside the functions that read tensors: the API process never loads torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.ml.backbones import BACKBONES, build_reference, build_trunk, get_backbone

if TYPE_CHECKING:
    from torch import Tensor, nn

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net")
MAX_LISTED = 8


class WeightsError(ValueError):
    """A weights file, name or entry is not usable; the message names the file/key and what was expected."""


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    arch: str
    sha256: str  # of NAME.safetensors
    source: str  # the imported file's name
    source_sha256: str
    parameters: int
    imported_at: str
    dropped: list[str]  # classifier keys left out of the trunk

    def to_json(self) -> dict:
        return asdict(self)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise WeightsError(f"name: '{name}' is not allowed; use 1-100 of A-Z a-z 0-9 . _ - (first alphanumeric)")
    return name


# ---------------------------------------------------------------- reading checkpoints
def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """Tensors of a torchvision/timm checkpoint: .safetensors, or .pth/.pt/.bin read with weights_only=True
    (a dict of tensors, possibly under "state_dict"/"model"; a DataParallel "module." prefix is removed)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path.name}: not a readable safetensors file ({exc})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle errors have many types; all mean "not a state dict"
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"{path.name}: not a tensors-only checkpoint readable with weights_only=True ({first}); "
                "save model.state_dict(), not the model object"
            ) from None
        tensors = _unwrap(obj, path.name)
    if not tensors:
        raise WeightsError(f"{path.name}: contains no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _unwrap(obj: object, label: str) -> dict[str, Tensor]:
    from torch import Tensor
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise WeightsError(f"{label}: expected a state dict (a dict of tensors); got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{label}: expected a state dict of tensors; non-tensor entries: {_few(bad)}")
    return {str(k): v for k, v in obj.items()}


def _few(items: list[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


# ---------------------------------------------------------------- checking against the architecture
def _reference_for(tensors: dict[str, Tensor], arch: str) -> nn.Module:
    """The torchvision network the file should match: with a classifier of the file's width when it has one."""
    prefix = get_backbone(arch).classifier_prefix
    heads = sorted(k for k in tensors if k.startswith(prefix) and k.endswith(".weight"))
    if not heads:
        return build_trunk(arch)
    last = tensors[heads[-1]]
    return build_reference(arch, int(last.shape[0]) if last.ndim == 2 else 1)


def check_tensors(tensors: dict[str, Tensor], arch: str, label: str) -> nn.Module:
    """Load `tensors` into the architecture with strict=True after checking every name, shape and value;
    returns the loaded network (trunk or full). Raises WeightsError naming the keys that do not fit."""
    import torch
    net = _reference_for(tensors, arch)
    expected = net.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}  # absent from pre-2018 checkpoints
    missing = [k for k in expected if k not in tensors and k not in optional]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [f"{k} (file {tuple(v.shape)}, {arch} {tuple(expected[k].shape)})"
              for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    errors = []
    if missing:
        errors.append(f"missing {len(missing)} key(s): {_few(missing)}")
    if unexpected:
        errors.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
    if shapes:
        errors.append(f"{len(shapes)} shape mismatch(es): {_few(shapes)}")
    if errors:
        raise WeightsError(f"{label}: does not fit {arch} (torchvision layout): " + "; ".join(errors))
    bad = [k for k, v in tensors.items()
           if not k.endswith("num_batches_tracked") and (not v.is_floating_point() or not torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{label}: non-float or non-finite values in: {_few(bad)}")
    net.load_state_dict(tensors, strict=True)
    return net


# ---------------------------------------------------------------- the store
def import_weights(file: Path, arch: str, name: str, root: Path, *, replace: bool = False) -> WeightsInfo:
    """Convert a checkpoint to a trunk safetensors entry NAME in `root` after checking every key and shape."""
    import torch
    from safetensors.torch import save_file
    check_name(name)
    if arch not in BACKBONES:
        raise WeightsError(f"arch: '{arch}' is not a backbone; allowed: {', '.join(BACKBONES)}")
    root.mkdir(parents=True, exist_ok=True)
    meta = root / f"{name}.json"
    if meta.exists() and not replace:
        raise WeightsError(f"name: weights '{name}' are already installed in {root}; choose another name or replace")
    file = Path(file)
    net = check_tensors(read_checkpoint(file), arch, file.name)
    prefix = get_backbone(arch).classifier_prefix
    full = net.state_dict()
    trunk_sd = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                for k, v in full.items() if not k.startswith(prefix)}
    build_trunk(arch).load_state_dict(trunk_sd, strict=True)  # what training will do with the stored file
    info = WeightsInfo(
        name=name, arch=arch, sha256="", source=file.name, source_sha256=sha256_file(file),
        parameters=sum(v.numel() for k, v in trunk_sd.items() if not k.endswith(("running_mean", "running_var",
                                                                                   "num_batches_tracked"))),
        imported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        dropped=sorted(k for k in full if k.startswith(prefix)),
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
    os.close(fd)
    try:
        save_file(trunk_sd, tmp, metadata={"arch": arch, "name": name, "format": "headwise-trunk-v1"})
        info = WeightsInfo(**{**info.to_json(), "sha256": sha256_file(Path(tmp))})
        os.replace(tmp, root / f"{name}.safetensors")
        _write_json(meta, info.to_json())
    finally:
        Path(tmp).unlink(missing_ok=True)
    return info


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def list_weights(root: Path | None) -> list[WeightsInfo]:
    """Installed entries (sorted by name); entries whose JSON is unreadable are skipped."""
    if root is None or not Path(root).is_dir():
        return []
    out = []
    for meta in sorted(Path(root).glob("*.json")):
        try:
            out.append(_read_info(meta))
        except WeightsError:
            continue
    return out


def _read_info(meta: Path) -> WeightsInfo:
    try:
        data = json.loads(meta.read_text())
        return WeightsInfo(**{k: data[k] for k in WeightsInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{meta.name}: unreadable weights metadata ({exc})") from None


def get_weights(root: Path | None, name: str) -> WeightsInfo:
    installed = list_weights(root)
    for info in installed:
        if info.name == name:
            return info
    where = f"HEADWISE_WEIGHTS_DIR ({root})" if root else "HEADWISE_WEIGHTS_DIR (not set)"
    names = ", ".join(i.name for i in installed) or "none"
    raise WeightsError(f"model.pretrained: weights '{name}' are not installed in {where}; installed: {names}")


def load_pretrained(trunk: nn.Module, root: Path | None, name: str, arch: str) -> WeightsInfo:
    """Load entry `name` into `trunk` (strict=True) after checking its architecture and sha256."""
    from safetensors.torch import load_file
    info = get_weights(root, name)
    if info.arch != arch:
        raise WeightsError(f"model.pretrained: weights '{name}' are for {info.arch}, not model.backbone {arch}")
    path = Path(root) / f"{name}.safetensors"  # type: ignore[arg-type]
    if not path.is_file() or sha256_file(path) != info.sha256:
        raise WeightsError(f"model.pretrained: {path} is missing or its sha256 differs from {name}.json; re-import it")
    trunk.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return info


def check_pretrained(root: Path | None, spec) -> None:
    """At job creation: `model.pretrained` must be installed for `model.backbone`; raises SpecError."""
    from service.ml.spec import SpecError

    name = spec.model.pretrained
    if name is None:
        return
    try:
        info = get_weights(root, name)
    except WeightsError as exc:
        raise SpecError([str(exc)]) from None
    if info.arch != spec.model.backbone:
        raise SpecError([f"model.pretrained: weights '{name}' are for {info.arch}, not model.backbone "
                         f"{spec.model.backbone}"])
