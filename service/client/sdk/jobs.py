"""Client methods for /v1/jobs: create (or upload and train in one call), list, cancel, wait, live events."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from service.api.schemas import ComparisonRead, JobList, JobRead
from service.client.errors import JobTimeout, Unavailable, error_from_response
from service.client.sdk.base import Base, _drop_none
from service.client.sse import Event, iter_sse
from service.domain import TERMINAL_STATUSES, JobStatus


class JobsAPI(Base):
    def spec_schema(self) -> dict[str, Any]:
        """The task spec's JSON Schema (GET /v1/spec/schema): validate specs before sending them."""
        return self._request("GET", "/v1/spec/schema").json()

    def create_job(self, dataset_id: str, model_name: str, spec: dict[str, Any],
                   compare: dict[str, Any] | None = None) -> JobRead:
        """compare: an optional comparison block (README "Comparison jobs"); its report: job_comparison()."""
        body = _drop_none(dataset_id=dataset_id, model_name=model_name, spec=spec, compare=compare)
        return self._model(JobRead, "POST", "/v1/jobs", json=body)

    def train(self, file: str | os.PathLike, spec: dict[str, Any], model_name: str,
              dataset_name: str | None = None, compare: dict[str, Any] | None = None) -> JobRead:
        """One call: upload the dataset and queue its training job (the spec and every label are checked first;
        on any error nothing is created). Returns the queued job, with its new `dataset_id`."""
        path = Path(file)
        data = _drop_none(spec=json.dumps(spec), model_name=model_name, dataset_name=dataset_name,
                          compare=json.dumps(compare) if compare is not None else None)
        with path.open("rb") as fh:
            return self._model(JobRead, "POST", "/v1/jobs", files={"file": (path.name, fh)}, data=data)

    def list_jobs(self, status: JobStatus | str | None = None, limit: int = 100, offset: int = 0) -> list[JobRead]:
        params = _drop_none(status=status and str(status), limit=limit, offset=offset)
        return self._model(JobList, "GET", "/v1/jobs", params=params).items

    def get_job(self, job_id: str) -> JobRead:
        return self._model(JobRead, "GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> JobRead:
        return self._model(JobRead, "POST", f"/v1/jobs/{job_id}/cancel")

    def wait_for_job(self, job_id: str, timeout: float = 600.0, interval: float = 1.0) -> JobRead:
        """Poll until the job is succeeded/failed/cancelled; returns the final job. Raises JobTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.status in TERMINAL_STATUSES:
                return job
            if time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(interval)

    def job_events(self, job_id: str, last_event_id: str | int | None = None,
                   timeout: float | None = None) -> Iterator[Event]:
        """Iterate the job's live events ("progress" within an epoch, "epoch" per epoch, then one final
        "status"); ends when the server closes the stream. `last_event_id` resumes after that epoch."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        stream_timeout = httpx.Timeout(self._http.timeout.connect, read=timeout)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                   timeout=stream_timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield from iter_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise Unavailable(0, "ConnectionError", f"{self.base_url}: {exc}") from exc

    def job_curves_png(self, job_id: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/plots/curves.png").content

    def job_comparison(self, job_id: str) -> ComparisonRead:
        """A comparison job's report (NotFound when the job has no compare block; complete=False while running)."""
        return self._model(ComparisonRead, "GET", f"/v1/jobs/{job_id}/comparison")

    def job_comparison_png(self, job_id: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/plots/comparison.png").content
