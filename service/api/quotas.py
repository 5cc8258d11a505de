"""Resource guards at the door: a team's quotas (active jobs, stored bytes, epochs x samples per job) and the
worker memory budget. Each refusal names the setting, the current use and the limit (README "Limits and
quotas"). A quota of 0 is no limit."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.config import Settings
from service.db import datasets as datasets_repo
from service.db import imports as imports_repo
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.errors import InsufficientStorageError, PayloadTooLargeError, TooManyRequestsError
from service.storage import Storage


def storage_used(session: Session, storage: Storage, team: str, exclude_import: str | None = None) -> dict[str, int]:
    """{"datasets": bytes of stored archives (uploaded or imported), "artifacts": bytes of model version files,
    "imports": bytes of imports under way} of a team (`exclude_import`: the import asking)."""
    artifacts = sum(storage.tree_bytes(rel) for rel in registry_repo.team_artifact_paths(session=session, team=team))
    return {"datasets": datasets_repo.team_dataset_bytes(session=session, team=team), "artifacts": artifacts,
            "imports": imports_repo.team_in_flight_bytes(session=session, team=team, exclude=exclude_import)}


def usage(session: Session, storage: Storage, settings: Settings, team: str) -> dict[str, Any]:
    """What GET /v1/usage shows: each quota's use and limit (null limit = none)."""
    parts = storage_used(session, storage, team)
    return {
        "team": team,
        "active_jobs": {"used": jobs_repo.count_team_active_jobs(session=session, team=team),
                        "limit": settings.TEAM_MAX_ACTIVE_JOBS or None, "setting": "HEADWISE_TEAM_MAX_ACTIVE_JOBS"},
        "storage_bytes": {"used": sum(parts.values()), **parts, "limit": settings.TEAM_MAX_STORAGE_BYTES or None,
                          "setting": "HEADWISE_TEAM_MAX_STORAGE_BYTES"},
        "job_sample_epochs": {"limit": settings.JOB_MAX_SAMPLE_EPOCHS or None,
                              "setting": "HEADWISE_JOB_MAX_SAMPLE_EPOCHS"},
        "worker_memory_bytes": {"limit": settings.WORKER_MEMORY_BYTES, "setting": "HEADWISE_WORKER_MEMORY_BYTES"},
    }


def check_active_jobs(session: Session, settings: Settings, team: str) -> None:
    """429 when the team already has TEAM_MAX_ACTIVE_JOBS queued + running jobs. Takes the team's quota lock
    for the rest of the transaction, so two requests cannot both take the last slot."""
    limit = settings.TEAM_MAX_ACTIVE_JOBS
    if not limit:
        return
    jobs_repo.lock_team(session=session, team=team)
    used = jobs_repo.count_team_active_jobs(session=session, team=team)
    if used >= limit:
        raise TooManyRequestsError(
            f"team '{team}' has {used} active (queued + running) jobs; the limit is {limit} "
            f"(HEADWISE_TEAM_MAX_ACTIVE_JOBS): wait for one to finish or cancel one")


def check_storage(session: Session, storage: Storage, settings: Settings, team: str, incoming: int = 0, *,
                  what: str = "this upload", exclude_import: str | None = None) -> int:
    """Bytes the team may still store. incoming > 0 (an upload or import of that size): 413 when it does not fit;
    incoming == 0 (a job that will write an artifact): 507 when nothing is left. 0 limit -> a huge number."""
    limit = settings.TEAM_MAX_STORAGE_BYTES
    if not limit:
        return 2**62
    used = sum(storage_used(session, storage, team, exclude_import).values())
    left = limit - used
    where = storage_detail(team, used, limit)
    if incoming > left:
        raise PayloadTooLargeError(f"storage quota: {where}; {what} of {incoming} bytes does not fit "
                                   f"({max(left, 0)} bytes left): delete datasets or model versions first")
    if incoming == 0 and left <= 0:
        raise InsufficientStorageError(f"storage quota: {where}; a new model version would not fit: "
                                       f"delete datasets or model versions first")
    return left


def storage_detail(team: str, used: int, limit: int) -> str:
    return (f"team '{team}' stores {used} bytes (datasets + artifacts + imports under way); the limit is {limit} "
            f"(HEADWISE_TEAM_MAX_STORAGE_BYTES)")


def check_job_size(spec: Any, num_samples: int, settings: Settings, runs: int = 1) -> None:
    """422 (SpecError naming training.epochs) when epochs x samples (x the sub-runs of a comparison) exceeds
    JOB_MAX_SAMPLE_EPOCHS. epochs "auto" counts as the most epochs it can choose on this dataset (the time budget
    only lowers it)."""
    from service.ml.spec import SpecError

    limit = settings.JOB_MAX_SAMPLE_EPOCHS
    epochs = spec.training.planned_epochs(num_samples)
    work = epochs * num_samples * runs
    if limit and work > limit:
        fits = max(limit // max(num_samples * runs, 1), 0)
        times = f" x {runs} sub-runs (compare)" if runs > 1 else ""
        shown = f"{epochs} epochs" if spec.training.epochs != "auto" else f'"auto" (up to {epochs} epochs here)'
        raise SpecError([f"training.epochs: {shown} x {num_samples} samples{times} = {work} "
                         f"exceeds the per-job limit of {limit} (HEADWISE_JOB_MAX_SAMPLE_EPOCHS); "
                         f"at most {fits} epochs fit on this dataset" + (" with this compare block" if times else "")])


def train_device(spec: Any, settings: Settings) -> str:
    """The device the estimate is made for: the spec's, else the workers' TRAIN_DEVICE; "auto" counts as CPU."""
    name = spec.training.device if spec.training.device != "auto" else settings.TRAIN_DEVICE
    return "cuda" if str(name).startswith("cuda") else "cpu"


def memory_estimate(spec: Any, num_samples: int, settings: Settings) -> dict[str, Any]:
    """The estimate as shown by the audit: peak, parts, budget, whether it fits and the largest batch size."""
    from service.ml import memory

    device = train_device(spec, settings)
    budget = settings.WORKER_MEMORY_BYTES
    est = memory.estimate(spec, num_samples, device=device)
    fits = est.total <= budget
    return {**est.as_dict(), "budget_bytes": budget, "fits": fits,
            "largest_batch_size": spec.training.batch_size if fits else
            memory.largest_batch_size(spec, num_samples, budget, device=device)}


def check_memory(spec: Any, num_samples: int, settings: Settings) -> int:
    """The estimated peak (bytes); 422 (MemoryBudgetError, a SpecError) when it exceeds WORKER_MEMORY_BYTES."""
    from service.ml import memory

    device = train_device(spec, settings)
    error = memory.budget_message(spec, num_samples, settings.WORKER_MEMORY_BYTES, device=device)
    if error is not None:
        raise error
    return memory.estimate(spec, num_samples, device=device).total


def admit_job(session: Session, storage: Storage, settings: Settings, team: str, spec: Any, num_samples: int,
              runs: int = 1) -> int:
    """Every check a new job passes before its row is written: epochs x samples (x the sub-runs of a comparison)
    and memory (422), the team's storage (507) and active jobs (429, taking the team's lock until the transaction
    ends). Returns the estimated peak memory (stored on the job: a worker claims it only within its own budget)."""
    check_job_size(spec, num_samples, settings, runs)
    peak = check_memory(spec, num_samples, settings)
    check_storage(session, storage, settings, team)
    check_active_jobs(session, settings, team)
    return peak
