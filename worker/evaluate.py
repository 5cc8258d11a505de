"""Evaluation jobs (kind "evaluate"): a model version scored on a labelled dataset.

The dataset is read as training reads it (service.ml.data.load_training_data with the version's resolved spec: the
same label encoding, checks and image cache); the network runs over it CHUNK images at a time. Result (the job's
metrics): {"images", "heads": {task: {"labelled", <metrics of its head type>, gated heads also "e2e_*",
"gate_miss_rate", "gate_false_alarm_rate"}}} from service.ml.metrics.evaluate -- for a gated head the plain metrics
are "given the true gate" (every labelled sample whose gate is not known negative, whatever the predicted gate) and
the e2e_* ones "end to end" (a sample counts as right only when the predicted gate also let it through). One plot per
head (confusion matrix / predicted-vs-true, end to end for gated heads: service.reports.plots.TaskPlot) lands in
results/<job id>/plots/<task>.png. Progress and cancel go through the job's JobMonitor.

Bounded memory: the images are a memmap read CHUNK at a time, and each chunk is reduced at once to what the metrics
(service.ml.metrics.StreamingEvaluation: label, prediction in label units, gate flags) and the plots (class names or
values) need per sample; network outputs and prediction dicts are dropped after each chunk.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from service.config import Settings
from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.db.tables import Dataset, Job, ModelVersion
from service.storage import Storage
from worker.errors import JobError
from worker.jobs import _stopped
from worker.monitor import LEASE_LOST, JobMonitor, jsonable

log = logging.getLogger("headwise.worker")
CHUNK = 256


def score(predictor, spec, data, title: str, should_stop, on_step) -> tuple[dict, dict] | None:
    """Every image of `data` through `predictor`, CHUNK at a time -> (metrics per head, {task: TaskPlot}), or None
    when should_stop() turned true (checked before each chunk and once after the last)."""
    from service.ml.metrics import StreamingEvaluation
    from service.reports.plots import TaskPlot

    n = len(data.images)  # a read-only memmap: CHUNK images are in memory at a time
    scores = StreamingEvaluation(spec, predictor.normalization)
    plots = {name: TaskPlot(spec, name, title=f"{title}: {name}") for name in spec.task_names}
    for start in range(0, n, CHUNK):
        if should_stop():
            return None
        batch = np.asarray(data.images[start:start + CHUNK])
        values = {t: lab.values[start:start + CHUNK] for t, lab in data.labels.items()}
        masks = {t: lab.mask[start:start + CHUNK] for t, lab in data.labels.items()}
        scores.add(predictor.outputs(batch), values, masks)
        preds = predictor.predict_arrays(batch, raw=True)
        for plot in plots.values():
            plot.add(values, masks, preds)
        on_step({"epoch": 1, "step": min(n, start + CHUNK) + 1, "steps": max(n, 1)})
    return None if should_stop() else (scores.result(), plots)


def run_evaluate(job: Job, dataset: Dataset | None, settings: Settings, storage: Storage,
                 monitor: JobMonitor) -> str:
    from service.ml.data import load_training_data
    from service.ml.inference import Predictor

    params = job.params or {}
    with session_scope() as session:
        mv = session.get(ModelVersion, params.get("model_version_id", ""))
        artifact = mv.artifact_path if mv is not None else None
    if artifact is None:
        raise JobError(f"model '{job.model_name}' version {params.get('version')} no longer exists")
    if dataset is None:
        raise JobError("the job's dataset no longer exists (it was deleted)")
    predictor = Predictor.load(storage.abs(artifact), device=settings.TRAIN_DEVICE)
    spec, data = load_training_data(predictor.spec, storage.abs(dataset.path), storage.dataset_cache_dir(dataset.id))
    monitor.epochs = 1
    scored = score(predictor, spec, data, f"{job.model_name} v{params.get('version')}", monitor.should_stop,
                   monitor.on_step)
    if scored is None:
        monitor.close(flush=True)
        return _stopped(job, monitor.stop_reason, settings)
    heads, plots = scored
    n = len(data.images)
    tmp = storage.new_tmp_path(f"-eval-{job.id}")
    try:
        (tmp / "plots").mkdir(parents=True)
        for name, plot in plots.items():
            (tmp / "plots" / f"{name}.png").write_bytes(plot.png())
        monitor.close(flush=True)
        if monitor.stop_reason == LEASE_LOST:
            return LEASE_LOST
        final = storage.results_dir(job.id)
        storage.remove(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        storage.remove(tmp)
    metrics = {"images": n, "heads": jsonable(heads)}
    with session_scope() as session:
        done = jobs_repo.finish_done(session=session, job_id=job.id, attempt=job.attempts, metrics=metrics,
                                     progress={"epoch": 1, "epochs": 1, "fraction": 1.0})
    if not done:
        return LEASE_LOST
    log.info("job %s: evaluation of %d images done", job.id, n)
    return "succeeded"
