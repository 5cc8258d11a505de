"""Model registry reads: registered models, versions (metrics, spec, dataset, job), artifact download (zip), the
network as ONNX (model.onnx)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, StorageDep, require
from service.api.schemas import (
    AliasRead,
    ErrorRead,
    ModelList,
    ModelRead,
    ModelRef,
    ModelSummary,
    VersionRead,
)
from service.auth import Principal
from service.db import aliases as aliases_repo
from service.db import registry as registry_repo
from service.db.tables import ModelVersion, RegisteredModel
from service.errors import NotFoundError, ServiceError

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 422)}
Reader = Annotated[Principal, Depends(require("models:read"))]
Version = Annotated[int, PathParam(ge=1, le=2**31 - 1)]  # an INTEGER column: larger is a 422, not a 500


def version_read(name: str, mv: ModelVersion, aliases: list[str] | None = None) -> VersionRead:
    parent = mv.parent or None
    return VersionRead(
        name=name, version=mv.version, metrics=mv.metrics or {}, spec=mv.spec or {}, dataset_id=mv.dataset_id,
        job_id=mv.job_id, checksums=mv.checksums or {}, created_at=mv.created_at, description=mv.description,
        tags=mv.tags or [], aliases=aliases or [],
        parent=ModelRef(name=parent["model"], version=parent["version"]) if parent else None,
    )


def get_model(session: Session, principal: Principal, name: str) -> RegisteredModel:
    model = registry_repo.get_team_model(session=session, team=principal.team, name=name)
    if model is None:
        raise NotFoundError(f"model '{name}' not found")
    return model


def get_version(session: Session, principal: Principal, name: str, version: int | None,
                alias: str | None = None) -> ModelVersion:
    """A version of the team's model by number, by alias, or the latest -> 404 naming what is missing."""
    model = get_model(session, principal, name)
    if alias is not None:
        mv = aliases_repo.resolve_alias(session=session, model_id=model.id, alias=alias)
        if mv is None:
            raise NotFoundError(f"alias: model '{name}' has no alias '{alias}'")
        return mv
    mv = registry_repo.get_model_version(session=session, model_id=model.id, version=version)
    if mv is None:
        raise NotFoundError(f"model '{name}' has no version {version}" if version else f"model '{name}' has no versions")
    return mv


@router.get("", response_model=ModelList, responses=ERRORS, summary="Registered models with their latest version")
def list_models(principal: Reader, session: SessionDep) -> ModelList:
    items = [
        ModelSummary(name=rm.name, created_at=rm.created_at, latest_version=mv.version if mv else None,
                     latest=version_read(rm.name, mv) if mv else None)
        for rm, mv in registry_repo.list_team_models(session=session, team=principal.team)
    ]
    return ModelList(items=items)


@router.get("/{name}", response_model=ModelRead, responses=ERRORS, summary="A model with its aliases and versions")
def read_model(name: str, principal: Reader, session: SessionDep) -> ModelRead:
    model = get_model(session, principal, name)
    aliases = aliases_repo.list_aliases(session=session, model_id=model.id)
    by_version: dict[int, list[str]] = {}
    for row, number in aliases:
        by_version.setdefault(number, []).append(row.alias)
    versions = [version_read(name, mv, by_version.get(mv.version))
                for mv in registry_repo.list_model_versions(session=session, model_id=model.id)]
    return ModelRead(name=name, created_at=model.created_at,
                     latest_version=versions[-1].version if versions else None,
                     aliases=[AliasRead(alias=row.alias, version=number, updated_at=row.updated_at)
                              for row, number in aliases],
                     versions=versions)


@router.get("/{name}/versions/{version}", response_model=VersionRead, responses=ERRORS, summary="One version")
def read_version(name: str, version: Version, principal: Reader, session: SessionDep) -> VersionRead:
    mv = get_version(session, principal, name, version)
    return version_read(name, mv, aliases_repo.aliases_of(session=session, version_id=mv.id))


class _Pipe(io.RawIOBase):
    """A write-only, unseekable buffer: zipfile streams into it and the response drains it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def iter_zip(files: list[tuple[Path, str]], chunk: int = 1 << 20) -> Iterator[bytes]:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, arcname in files:
            info = zipfile.ZipInfo.from_file(path, arcname)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                while data := src.read(chunk):
                    dst.write(data)
                    if out := pipe.take():
                        yield out
    yield pipe.take()


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={**ERRORS, 200: {"content": {"application/zip": {}}, "description": "zip of the artifact files"}},
    summary="Download the artifact (model.safetensors, spec.json, meta.json, checksums.json) as a zip",
)
def download_artifact(name: str, version: Version, principal: Reader, session: SessionDep,
                      storage: StorageDep) -> StreamingResponse:
    mv = get_version(session, principal, name, version)
    directory = storage.abs(mv.artifact_path)
    files = [(p, p.relative_to(directory).as_posix()) for p in storage.iter_files(directory)] if directory.is_dir() else []
    if not files:
        raise ServiceError(f"artifact of model '{name}' version {version} is missing on disk", 500, "ArtifactMissing")
    filename = f"{name}-v{version}.zip"
    return StreamingResponse(iter_zip(files), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


ONNX_DOC = """The version's network as ONNX (opset 17, dynamic batch), exported and checked against torch when the
version was registered; serve it with ONNX Runtime, Triton, ... Input `input.images`: uint8 (batch, H, W, C), the
image resized to the version's image_size (bilinear), RGB (C=3) or grayscale (C=1); scaling by 1/255 and the
normalisation happen inside the graph. Outputs: one float32 tensor per task, named as the task: multiclass logits
(batch, K), binary logit (batch,), regression standardised value (batch,) (value = output * std + mean, from the
version's meta.json normalization). Gating is applied by the caller (meta.json gate_order, label_maps). The
`ETag` is the file's sha256 (also in the version's `checksums`). 404 for versions registered without ONNX (they
still serve through torch)."""


@router.get(
    "/{name}/versions/{version}/model.onnx",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}, "description": "the ONNX model"}},
    summary="Download the network as ONNX",
    description=ONNX_DOC,
)
def download_onnx(name: str, version: Version, principal: Reader, session: SessionDep, storage: StorageDep) -> Response:
    mv = get_version(session, principal, name, version)
    digest = (mv.checksums or {}).get("model.onnx")
    if digest is None:
        raise NotFoundError(f"model '{name}' version {version} has no ONNX export (registered before ONNX export "
                            "or with HEADWISE_EXPORT_ONNX off); it still serves through torch")
    try:
        data = (storage.abs(mv.artifact_path) / "model.onnx").read_bytes()
    except OSError:
        raise ServiceError(f"model.onnx of model '{name}' version {version} is missing on disk", 500,
                           "ArtifactMissing") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise ServiceError(f"model.onnx of model '{name}' version {version} fails its sha256 check", 500,
                           "ArtifactCorrupt")
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{name}-v{version}.onnx"', "ETag": f'"{digest}"'})
