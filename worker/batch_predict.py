"""Batch prediction jobs (kind "batch_predict"): every image of a dataset through a model version -> results.jsonl
(one line per image: its path and every head, as /v1 predict answers; gated heads suppressed with the reason) and
results.csv (one row per image, one column per head field).

Streams: images are decoded CHUNK at a time (service.ml iter_images reads the archive member by member) and each
chunk's lines are appended to files in the data dir's tmp/, so memory is bounded by CHUNK whatever the dataset size.
The files are moved into results/<job id>/ only when every image is done, just before the job is marked succeeded
(a failed or cancelled run leaves nothing half-written). Progress (fraction of images) and cancel go through the
job's JobMonitor, as in training.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from service.config import Settings
from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.db.tables import Dataset, Job, ModelVersion
from service.storage import Storage
from worker.errors import JobError
from worker.jobs import _stopped
from worker.monitor import LEASE_LOST, JobMonitor

log = logging.getLogger("headwise.worker")

CHUNK = 256
FILES = ("results.jsonl", "results.csv")


class BatchPredictError(JobError):
    """A readable reason the batch prediction cannot run."""


def csv_columns(spec: Any) -> list[str]:
    """path, then per task: <task> (label / value; multilabel tags joined by '|'), <task>.p.<class> per class,
    <task>.probability (binary), <task>.gated and <task>.reason (gated tasks)."""
    cols = ["path"]
    for t in spec.tasks:
        cols.append(t.name)
        if t.type in ("multiclass", "multilabel"):
            cols += [f"{t.name}.p.{c}" for c in t.classes or []]
        elif t.type == "binary":
            cols.append(f"{t.name}.probability")
        if t.gate is not None:
            cols += [f"{t.name}.gated", f"{t.name}.reason"]
    return cols


def csv_row(spec: Any, path: str, heads: dict) -> dict:
    row: dict[str, Any] = {"path": path}
    for t in spec.tasks:
        h = heads[t.name]
        main = h.get("labels", h.get("label", h.get("value")))
        row[t.name] = "|".join(main) if isinstance(main, list) else ("" if main is None else main)
        for c, p in (h.get("probabilities") or {}).items():
            row[f"{t.name}.p.{c}"] = p
        if "probability" in h:
            row[f"{t.name}.probability"] = h["probability"]
        if t.gate is not None:
            row[f"{t.name}.gated"] = bool(h.get("gated"))
            row[f"{t.name}.reason"] = h.get("reason") or ""
    return row


def _inputs(job: Job, dataset: Dataset | None, storage: Storage) -> tuple[str, Path, Any]:
    """-> (artifact path, images archive, its Table): a stored dataset, or an uploaded zip of images."""
    params = job.params or {}
    with session_scope() as session:
        mv = session.get(ModelVersion, params.get("model_version_id", ""))
        if mv is None:
            raise BatchPredictError(f"model '{job.model_name}' version {params.get('version')} no longer exists")
        artifact = mv.artifact_path
    if params.get("input"):
        from service.serving.batch_input import unlabelled_table

        archive = storage.abs(params["input"])
        if not archive.is_file():
            raise BatchPredictError("the uploaded images are gone from the data dir")
        return artifact, archive, unlabelled_table(archive, params.get("filename") or "file")
    if dataset is None:
        raise BatchPredictError("the job's dataset no longer exists (it was deleted)")
    return artifact, storage.abs(dataset.path), storage.load_table(dataset.id, dataset.path)


def write_results(predictor: Any, archive: Path, table: Any, jsonl: Any, writer: csv.DictWriter,
                  stop: Any, on_step: Any) -> int | None:
    """Every image of `archive` (the rows of `table`) through `predictor`, CHUNK at a time, each chunk's lines
    appended to the open `jsonl` file and the csv `writer`: -> the images done, or None when `stop()` said so
    before a chunk. Nothing but the current chunk is kept."""
    from service.ml.data.images import iter_images

    total, spec = len(table), predictor.spec
    chunk: list[tuple[int, Any]] = []
    done = 0
    for i, image in iter_images(archive, table):
        chunk.append((i, image))
        if len(chunk) == CHUNK or i == total - 1:
            if stop():
                return None
            for (k, _img), heads in zip(chunk, predictor.predict([img for _, img in chunk]), strict=True):
                jsonl.write(json.dumps({"path": table.keys[k], **heads}) + "\n")
                writer.writerow(csv_row(spec, table.keys[k], heads))
            done += len(chunk)
            chunk = []
            on_step({"epoch": 1, "step": done + 1, "steps": max(total, 1)})
    return done


def run_batch_predict(job: Job, dataset: Dataset | None, settings: Settings, storage: Storage,
                      monitor: JobMonitor) -> str:
    """-> "succeeded", "cancelled", "failed" (timeout) or LEASE_LOST; raises on errors (the caller fails the job)."""
    from service.ml.inference import Predictor

    artifact, archive, table = _inputs(job, dataset, storage)
    predictor = Predictor.load(storage.abs(artifact), device=settings.TRAIN_DEVICE)
    spec = predictor.spec
    monitor.epochs = 1
    tmp = {name: storage.new_tmp_path(f"-{job.id}-{name}") for name in FILES}
    try:
        with open(tmp["results.jsonl"], "w") as jsonl, open(tmp["results.csv"], "w", newline="") as out_csv:
            writer = csv.DictWriter(out_csv, csv_columns(spec))
            writer.writeheader()
            done = write_results(predictor, archive, table, jsonl, writer, monitor.should_stop, monitor.on_step)
            if done is None:
                return _stop(job, monitor, settings)
        if monitor.should_stop():
            return _stop(job, monitor, settings)
        return _publish(job, storage, tmp, monitor, {"images": done, "model": job.model_name,
                                                     "version": (job.params or {}).get("version")})
    finally:
        for path in tmp.values():
            storage.remove(path)


def _publish(job: Job, storage: Storage, tmp: dict, monitor: JobMonitor, metrics: dict) -> str:
    monitor.close(flush=True)
    if monitor.stop_reason == LEASE_LOST:
        return LEASE_LOST
    final = storage.results_dir(job.id)
    final.mkdir(parents=True, exist_ok=True)
    for name, path in tmp.items():
        os.replace(path, final / name)
    with session_scope() as session:
        done = jobs_repo.finish_done(session=session, job_id=job.id, attempt=job.attempts, metrics=metrics,
                                     progress={"epoch": 1, "epochs": 1, "fraction": 1.0})
    if not done:
        storage.remove(final)
        return LEASE_LOST
    if (job.params or {}).get("input"):  # an uploaded zip is needed only until the job is done
        storage.remove(storage.abs(job.params["input"]))
    log.info("job %s: batch prediction of %d images done", job.id, metrics["images"])
    return "succeeded"


def _stop(job: Job, monitor: JobMonitor, settings: Settings) -> str:
    monitor.close(flush=True)
    return _stopped(job, monitor.stop_reason, settings)
