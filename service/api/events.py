"""GET /v1/jobs/{id}/events: live training progress as Server-Sent Events.

The job row is the source: the stream polls it (about once a second, in a worker thread so the event loop never
blocks) and sends
  event: status   when the status changes; data {"status", "progress", "error", "metrics", "model"}
  event: epoch    one per finished epoch, id = the epoch number; data = the stored history item plus
                  "epochs", "labelled" ({task: {"train", "val"}}) and "eta_seconds"
  event: progress inside the running epoch, when the worker reported new batches (at most every
                  PROGRESS_SECONDS); data {"epoch" (running, 1-based), "epochs", "batch", "batches", "fraction",
                  "images_per_second", "eta_seconds"}; no id
and ends after a final status event once the job is succeeded, failed or cancelled. Reconnecting with
`Last-Event-ID: <epoch>` resumes after that epoch. Comment lines keep idle connections alive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import get_principal
from service.api.schemas import ErrorRead
from service.auth import Principal
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.domain import TERMINAL_STATUSES, JobStatus
from service.errors import NotFoundError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
SSE_RESPONSE = {
    200: {"description": "text/event-stream of `status` and `epoch` events",
          # OpenAPI < 3.2: the schema of a text/event-stream describes each event
          "content": {"text/event-stream": {"schema": {
              "type": "object", "required": ["data"],
              "properties": {"event": {"type": "string", "enum": ["status", "epoch", "progress"]},
                             "data": {"type": "string", "description": "a JSON object"},
                             "id": {"type": "string", "description": "the epoch number (epoch events)"}}}}}},
    **{code: {"model": ErrorRead} for code in (401, 403, 404)},
}


def snapshot(sessionmaker: Callable[[], Session], job_id: str, team: str) -> dict[str, Any] | None:
    """Blocking: the job's current state as plain data (None when it does not exist for this team)."""
    with sessionmaker() as session:
        job = jobs_repo.get_team_job(session=session, job_id=job_id, team=team)
        if job is None:
            return None
        model = registry_repo.job_versions(session=session, job_ids=[job.id]).get(job.id) if job.status == JobStatus.SUCCEEDED \
            else None
        progress = jobs_repo.progress_of(job)
        return {
            "status": job.status,
            "progress": progress,
            "history": list(job.history or []),
            "metrics": job.metrics or {},
            "error": job.error,
            "model": {"name": model[0], "version": model[1]} if model else None,
        }


def epoch_event(item: dict[str, Any], history: list[dict[str, Any]], epochs: int | None) -> dict[str, Any]:
    """A history item enriched with the total epochs, per-head labelled counts and an ETA."""
    epoch = int(item.get("epoch") or 0)
    upto = [h for h in history if int(h.get("epoch") or 0) <= epoch]
    seconds = [float(h["seconds"]) for h in upto if isinstance(h.get("seconds"), int | float)]
    eta = None
    if epochs and seconds:
        eta = max(0, epochs - epoch) * (sum(seconds) / len(seconds))
    tasks = list(dict.fromkeys([*(item.get("train") or {}), *(item.get("val") or {})]))
    labelled = {t: {"train": ((item.get("train") or {}).get(t) or {}).get("labelled"),
                    "val": ((item.get("val") or {}).get(t) or {}).get("labelled")} for t in tasks}
    return {**item, "epoch": epoch, "epochs": epochs, "labelled": labelled, "eta_seconds": eta}


def progress_event(progress: dict[str, Any]) -> dict[str, Any] | None:
    """The running epoch's batch progress (epoch = the running epoch, 1-based), or None when there is none."""
    if not isinstance(progress.get("batch"), int) or not isinstance(progress.get("batches"), int):
        return None
    keys = ("epochs", "batch", "batches", "fraction", "images_per_second", "eta_seconds")
    return {"epoch": int(progress.get("epoch") or 0) + 1, **{k: progress.get(k) for k in keys}}


def status_event(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("status", "progress", "error", "metrics", "model")}


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def parse_last_event_id(value: str | None) -> int:
    try:
        return max(0, int(str(value).strip()))
    except (TypeError, ValueError):
        return 0


async def event_stream(request: Request, sessionmaker: Callable[[], Session], job_id: str, team: str,
                       after: int, snap: dict[str, Any]) -> AsyncIterator[str]:
    sent, last_status, last_write, last_progress = after, None, time.monotonic(), None
    while True:
        terminal = snap["status"] in TERMINAL_STATUSES
        if snap["status"] != last_status and not terminal:
            last_status = snap["status"]
            yield sse("status", status_event(snap))
            last_write = time.monotonic()
        epochs = snap["progress"].get("epochs")
        for item in sorted(snap["history"], key=lambda h: int(h.get("epoch") or 0)):
            epoch = int(item.get("epoch") or 0)
            if epoch > sent:
                sent = epoch
                yield sse("epoch", epoch_event(item, snap["history"], epochs), epoch)
                last_write = time.monotonic()
        progress = progress_event(snap["progress"])
        if progress and not terminal and progress["epoch"] == sent + 1 and progress != last_progress:
            last_progress = progress  # within the epoch after the last one sent; rate set by PROGRESS_SECONDS
            yield sse("progress", progress)
            last_write = time.monotonic()
        if terminal:
            yield sse("status", status_event(snap))
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
        fresh = await run_in_threadpool(snapshot, sessionmaker, job_id, team)
        if fresh is None:  # vanished (cannot happen through the API); end the stream
            return
        snap = fresh


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=SSE_RESPONSE,
            summary="Live progress (Server-Sent Events): batch progress, one event per epoch, then the final status")
async def job_events(
    job_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(get_principal)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    sessionmaker = request.app.state.sessionmaker
    snap = await run_in_threadpool(snapshot, sessionmaker, job_id, principal.team)
    if snap is None:
        raise NotFoundError(f"job '{job_id}' not found")
    stream = event_stream(request, sessionmaker, job_id, principal.team, parse_last_event_id(last_event_id), snap)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
