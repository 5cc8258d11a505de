"""Artifacts: a trained model as plain files that can be loaded without executing anything.

Layout of an artifact directory:
  model.safetensors   network weights (safetensors: tensors only, no pickle)
  spec.json           the resolved spec (classes filled in)
  meta.json           format_version, preprocessing, label maps, normalisation, metrics, best_epoch, history
  model.onnx          optional: the network as ONNX (service/ml/export.py), for ONNX Runtime and other servers
  checksums.json      {file: sha256} of every file above
`save_artifact` writes into a sibling temporary directory, fsyncs, then renames it into place, so a reader never
sees a half-written artifact. `load_artifact` verifies every checksum before parsing anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from service.ml.backbones.finetune import describe as describe_backbone
from service.ml.spec import Spec, SpecError, parse_spec

if TYPE_CHECKING:
    from service.ml.train import TrainResult

FORMAT_VERSION = 1
FILES = ("model.safetensors", "spec.json", "meta.json")
OPTIONAL_FILES = ("model.onnx",)  # present only when listed in checksums.json; older artifacts have none


class ArtifactError(ValueError):
    """An artifact is missing a file, fails its checksum, or cannot be parsed. The message names the file."""


@dataclass
class Artifact:
    spec: Spec
    state_dict: dict[str, torch.Tensor]
    meta: dict
    path: Path


def label_maps(spec: Spec) -> dict[str, dict]:
    maps = {}
    for t in spec.tasks:
        entry = t.head.label_map(t)
        if t.gate is not None:
            entry["gate"] = t.gate.model_dump(mode="json")
        maps[t.name] = entry
    return maps


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_artifact(result: TrainResult, out_dir: Path, extra_files: dict[str, bytes] | None = None,
                  extra_meta: dict | None = None) -> dict[str, str]:
    """Write `result` as an artifact directory at `out_dir` (atomically). Returns {file: sha256}.
    extra_files: optional files by name (OPTIONAL_FILES, e.g. model.onnx), checksummed like the others;
    extra_meta: more meta.json keys (e.g. the ONNX check report)."""
    out_dir = Path(out_dir)
    spec = result.spec
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in result.state_dict.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "preprocessing": {
            "image_size": spec.model.image_size,
            "channels": spec.model.channels,
            "resize": "bilinear",
            "dtype": "uint8",
            "layout": "HWC",
            "scale": 1.0 / 255.0,
        },
        "label_maps": label_maps(spec),
        "gate_order": spec.gate_order(),
        "normalization": result.normalization,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "weighting": result.weighting,
        "history": result.history,
        "torch_version": torch.__version__,
        "backbone": describe_backbone(spec, getattr(result, "pretrained", None)),
        **(extra_meta or {}),
    }
    blobs = {
        "model.safetensors": save_safetensors(tensors, metadata={"format": "pt"}),
        "spec.json": json.dumps(spec.to_json_dict(), indent=2, sort_keys=True).encode(),
        "meta.json": json.dumps(_finite(meta), indent=2, allow_nan=False).encode(),
    }
    for name, data in (extra_files or {}).items():
        if name not in OPTIONAL_FILES:
            raise ValueError(f"{name}: not an optional artifact file ({', '.join(OPTIONAL_FILES)})")
        blobs[name] = data
    checksums = {name: _sha256(data) for name, data in blobs.items()}
    blobs["checksums.json"] = json.dumps(checksums, indent=2, sort_keys=True).encode()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, data in blobs.items():
            _write(tmp / name, data)
        _fsync_dir(tmp)
        old = None
        if out_dir.exists():  # replace an existing artifact: move it aside, swap in, then delete it
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return checksums


def _finite(value):
    """JSON-ready copy: tensors/numpy scalars -> Python numbers, NaN/inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_json(path: Path, data: bytes, name: str) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path / name}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path / name}: must be a JSON object")
    return obj


def load_artifact(path: Path) -> Artifact:
    """Load and verify an artifact directory. Uses only json and safetensors (never pickle)."""
    path = Path(path)
    try:
        checksums = _read_json(path, (path / "checksums.json").read_bytes(), "checksums.json")
    except OSError as exc:
        raise ArtifactError(f"{path / 'checksums.json'}: cannot read ({exc.strerror or exc})") from None
    blobs: dict[str, bytes] = {}
    for name in FILES:
        if name not in checksums:
            raise ArtifactError(f"{path / 'checksums.json'}: no checksum for {name}")
        try:
            blobs[name] = (path / name).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{path / name}: cannot read ({exc.strerror or exc})") from None
        if _sha256(blobs[name]) != checksums[name]:
            raise ArtifactError(f"{path / name}: sha256 mismatch (file changed or corrupted)")
    meta = _read_json(path, blobs["meta.json"], "meta.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path / 'meta.json'}: format_version {meta.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})"
        )
    try:
        spec = parse_spec(blobs["spec.json"])
    except SpecError as exc:
        raise ArtifactError(f"{path / 'spec.json'}: invalid spec ({exc})") from None
    try:
        state_dict = load_safetensors(blobs["model.safetensors"])
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{path / 'model.safetensors'}: cannot parse ({exc})") from None
    return Artifact(spec=spec, state_dict=state_dict, meta=meta, path=path)


def read_optional_file(path: Path, name: str) -> bytes | None:
    """The verified bytes of optional file `name` (e.g. model.onnx) of the artifact at `path`, or None when the
    artifact has none (it is not listed in checksums.json). Raises ArtifactError when it is listed but missing
    or fails its sha256."""
    path = Path(path)
    try:
        checksums = _read_json(path, (path / "checksums.json").read_bytes(), "checksums.json")
    except OSError as exc:
        raise ArtifactError(f"{path / 'checksums.json'}: cannot read ({exc.strerror or exc})") from None
    if name not in checksums:
        return None
    try:
        data = (path / name).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path / name}: cannot read ({exc.strerror or exc})") from None
    if _sha256(data) != checksums[name]:
        raise ArtifactError(f"{path / name}: sha256 mismatch (file changed or corrupted)")
    return data
