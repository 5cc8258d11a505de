"""PNG plots: a job's training curves, and a model version's per-head evaluation plot.

Curves are drawn from the job's stored history on every request (cheap; it changes while the job runs).
Both endpoints are plain `def`: FastAPI runs them in its threadpool, so rendering never blocks the event loop.
Per-head plots need validation predictions, which the artifact does not store: the first request for a
version reruns it on its dataset's validation split (the trainer's seeded split, reproduced from the resolved
spec) in a worker thread, renders every head once and caches the PNGs under DATA_DIR/plots/<version id>/.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi import Path as PathParam

from service.api.deps import SessionDep, SettingsDep, StorageDep, get_principal, require
from service.api.models import get_version
from service.api.schemas import ErrorRead
from service.auth import Principal
from service.db import datasets as datasets_repo
from service.db import jobs as jobs_repo
from service.errors import ConflictError, NotFoundError
from service.reports import plots
from service.storage import Storage

router = APIRouter(tags=["plots"])
PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"},
       **{code: {"model": ErrorRead} for code in (401, 403, 404, 409)}}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _png(data: bytes, cache: str) -> Response:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": cache})


@router.get("/v1/jobs/{job_id}/plots/curves.png", response_class=Response, responses=PNG,
            summary="Training curves: train/val loss and the main metric per head (+ learned task weights)")
def job_curves(job_id: str, principal: Annotated[Principal, Depends(get_principal)],
               session: SessionDep) -> Response:
    job = jobs_repo.get_team_job(session=session, job_id=job_id, team=principal.team)
    if job is None:
        raise NotFoundError(f"job '{job_id}' not found")
    weighting = (job.spec or {}).get("weighting") or {}
    title = f"{job.model_name} · job {job.id[:8]} · {job.status}"
    data = plots.curves_png(list(job.history or []), weighting, title)
    return _png(data, "no-store")


def _plot_path(storage: Storage, version_id: str, task: str) -> Path:
    return storage.root / "plots" / version_id / f"{hashlib.sha256(task.encode()).hexdigest()[:24]}.png"


def _render_version(storage: Storage, device: str, version_id: str, artifact: Path, dataset_path: Path,
                    cache_dir: Path, title: str, task: str) -> bytes:
    """Blocking: the cached PNG, or rerun validation once for the version and render every head."""
    target = _plot_path(storage, version_id, task)
    with _locks_guard:
        lock = _locks.setdefault(version_id, threading.Lock())
    with lock:
        if target.is_file():
            return target.read_bytes()
        spec, labels, val_idx, preds = plots.validation_predictions(artifact, dataset_path, cache_dir, device)
        for name in spec.task_names:
            png = plots.task_png(spec, labels, val_idx, preds, name, title=f"{title} · {name}")
            storage.atomic_write_bytes(_plot_path(storage, version_id, name), png)
        return target.read_bytes()


@router.get("/v1/models/{name}/versions/{version}/plots/{task}.png", response_class=Response, responses=PNG,
            summary="Per-head plot on the validation split: confusion matrix (classification) or "
                    "predicted-vs-true (regression); end to end for gated heads, gate mistakes marked")
def version_task_plot(
    name: str, version: Annotated[int, PathParam(ge=1, le=2**31 - 1)], task: str,
    principal: Annotated[Principal, Depends(require("models:read"))],
    session: SessionDep, storage: StorageDep, settings: SettingsDep,
) -> Response:
    mv = get_version(session, principal, name, version)
    dataset = datasets_repo.get_dataset(session=session, dataset_id=mv.dataset_id, team=principal.team) \
        if mv.dataset_id else None
    tasks = [t.get("name") for t in (mv.spec or {}).get("tasks", [])]
    if task not in tasks:
        raise NotFoundError(f"model '{name}' version {version} has no task '{task}'; tasks are: {', '.join(tasks)}")
    cached = _plot_path(storage, mv.id, task)
    if cached.is_file():
        return _png(cached.read_bytes(), "private, max-age=3600")
    if dataset is None:
        raise ConflictError(f"model '{name}' version {version}: its dataset was deleted, so the validation "
                            "predictions for this plot cannot be computed")
    data = _render_version(
        storage, settings.PREDICT_DEVICE, mv.id, storage.abs(mv.artifact_path),
        storage.abs(dataset.path), storage.dataset_cache_dir(dataset.id), f"{name} v{version}", task)
    return _png(data, "private, max-age=3600")
