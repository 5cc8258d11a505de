"""A comparison job (issue 15): the main spec and its variants as sub-runs of ONE job
(service/ml/compare_run.py), bound here to the job row: one progress bar over all sub-runs (the monitor's epochs
span them), one cancel and the job's lease (the monitor's should_stop reaches every sub-run, within an epoch too),
and after each sub-run its record and the report so far written to the row (`params.comparison`, fenced by the
attempt number). A requeued attempt starts from what the row holds; the running sub-run resumes from its
checkpoint under the job's checkpoint directory (`run-NN/`) when the files are there (same host or a shared data
directory) and restarts from its first epoch otherwise: object-storage checkpoint sync covers plain jobs only.
HEADWISE_MAX_JOB_SECONDS bounds the whole comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.db.tables import Job
from service.storage import Storage
from worker.monitor import LEASE_LOST, JobMonitor, jsonable


def is_comparison(job: Job) -> bool:
    return isinstance(job.params, dict) and isinstance(job.params.get("compare"), dict)


def run_comparison(job: Job, spec: Any, data: Any, storage: Storage, monitor: JobMonitor, device: str,
                   weights_dir: Any, init: Any = None) -> Any:
    """Train the sub-runs the row does not hold yet -> the TrainResult to register. Raises TrainingCancelled on
    cancel, timeout or a lost lease."""
    from service.ml import compare_run
    from service.ml.compare import plan

    params = dict(job.params)
    monitor.epochs = spec.training.planned_epochs(len(data.images)) * len(plan(spec, params["compare"]))

    def save(state: dict[str, Any]) -> None:
        _save(job, monitor, {**params, "comparison": state})

    result, state = compare_run.run_comparison(
        spec, params["compare"], data, device=device, checkpoint_root=storage.checkpoint_dir(job.id),
        state=params.get("comparison"), save=save, should_stop=monitor.should_stop, on_epoch=monitor.on_epoch,
        on_step=monitor.on_step, weights_dir=weights_dir, init=init)
    save(state)
    job.params = {**params, "comparison": jsonable(state)}
    return result


def _save(job: Job, monitor: JobMonitor, params: dict[str, Any]) -> None:
    from service.ml.train import TrainingCancelled

    with session_scope() as session:
        owned = jobs_repo.write_params(session=session, job_id=job.id, attempt=job.attempts, params=jsonable(params))
    if not owned:
        monitor.stop_reason = LEASE_LOST
        raise TrainingCancelled("this attempt lost its lease")


def write_plot(job: Job, artifact_dir: Path) -> None:
    """comparison.png with the version's reports (served by GET /v1/jobs/{id}/plots/comparison.png)."""
    from service.reports.compare import COMPARISON_FILE, comparison_png
    from service.reports.version import REPORTS_DIR

    report = ((job.params or {}).get("comparison") or {}).get("report")
    if report:
        reports_dir = artifact_dir / REPORTS_DIR
        reports_dir.mkdir(parents=True, exist_ok=True)
        (reports_dir / COMPARISON_FILE).write_bytes(comparison_png(report, f"{job.model_name} · job {job.id[:8]}"))
