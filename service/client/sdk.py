"""Typed Python client for the Headwise REST API (httpx). Used by the CLI and the tests.

    from service.client import Client
    with Client("http://127.0.0.1:8000", api_key="hw_...") as hw:
        ds = hw.upload_dataset("example.zip")
        job = hw.create_job(ds["id"], "shapes", spec)
        for event in hw.job_events(job["id"]):
            print(event.event, event.data)
        print(hw.predict("shapes", ["cat.png"]))

Errors come back as `HeadwiseError` subclasses carrying the server's `{"error": kind, "detail": ...}`.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.domain import TERMINAL_STATUSES

ImageInput = str | os.PathLike | bytes


class HeadwiseError(Exception):
    """An error answer from the server: HTTP status, error kind and detail."""

    status: int = 0

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(status, kind, detail)
        self.status = status
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.detail}"


class Invalid(HeadwiseError):  # 400, 415, 422
    pass


class Unauthorized(HeadwiseError):  # 401
    pass


class Forbidden(HeadwiseError):  # 403
    pass


class NotFound(HeadwiseError):  # 404
    pass


class Conflict(HeadwiseError):  # 409
    pass


class TooLarge(HeadwiseError):  # 413
    pass


class Unavailable(HeadwiseError):  # 503 (and connection failures)
    pass


class JobTimeout(TimeoutError):
    """wait_for_job gave up before the job ended."""


_BY_STATUS: dict[int, type[HeadwiseError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: Invalid,
    422: Invalid,
    503: Unavailable,
}


def error_from_response(response: httpx.Response) -> HeadwiseError:
    """Build the typed exception for a non-2xx response."""
    kind, detail = f"HTTP{response.status_code}", response.reason_phrase or ""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        kind = str(body.get("error") or kind)
        raw = body.get("detail", detail)
        detail = raw if isinstance(raw, str) else json.dumps(raw)
    elif response.text:
        detail = response.text[:500]
    cls = _BY_STATUS.get(response.status_code, HeadwiseError)
    return cls(response.status_code, kind, detail)


@dataclass
class Event:
    """One Server-Sent Event: `event` is "epoch" or "status"; `data` is the decoded JSON payload."""

    event: str
    data: Any
    id: str | None = None


def iter_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Parse an SSE line stream (text/event-stream) into events; comments/keep-alives are skipped.
    `Event.id` is the id field of that event itself (None when it has none); resume with the last non-None."""
    event, data, ident = "message", [], None
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(event=event, data=payload, id=ident)
            event, data, ident = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value


def _image_part(index: int, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, bytes | bytearray):
        return ("files", (f"image{index}", bytes(image), "application/octet-stream"))
    path = Path(image)
    return ("files", (path.name, path.read_bytes(), "application/octet-stream"))


class Client:
    """Synchronous client; every method returns the decoded JSON body (dicts/lists) or raises HeadwiseError."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ):
        base_url = base_url or os.environ.get("HEADWISE_URL") or "http://127.0.0.1:8000"
        self.api_key = api_key if api_key is not None else os.environ.get("HEADWISE_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    # ---- plumbing ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(0, "ConnectionError", f"{self.base_url}{path}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    # ---- health ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def ready(self) -> dict[str, Any]:
        return self._json("GET", "/ready")

    # ---- datasets ----------------------------------------------------------------------------------
    def upload_dataset(self, file: str | os.PathLike | bytes, name: str | None = None,
                       filename: str | None = None) -> dict[str, Any]:
        """Upload a .zip or .npz dataset (a path, or bytes with `filename` giving the extension)."""
        if isinstance(file, bytes | bytearray):
            fname = filename or "dataset.zip"
            data = {"name": name} if name else {}
            return self._json("POST", "/v1/datasets", files={"file": (fname, bytes(file))}, data=data)
        path = Path(file)
        data = {"name": name} if name else {}
        with path.open("rb") as fh:
            return self._json("POST", "/v1/datasets", files={"file": (filename or path.name, fh)}, data=data)

    def list_datasets(self) -> list[dict[str, Any]]:
        return _items(self._json("GET", "/v1/datasets"))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def audit(self, dataset_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/v1/datasets/{dataset_id}/audit", json={"spec": spec})

    # ---- jobs --------------------------------------------------------------------------------------
    def create_job(self, dataset_id: str, model_name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"dataset_id": dataset_id, "model_name": model_name, "spec": spec}
        return self._json("POST", "/v1/jobs", json=body)

    def train(self, file: str | os.PathLike, spec: dict[str, Any], model_name: str,
              dataset_name: str | None = None) -> dict[str, Any]:
        """One call: upload the dataset and queue its training job (the spec and every label are checked first;
        on any error nothing is created). Returns the queued job, with its new `dataset_id`."""
        path = Path(file)
        data = {"spec": json.dumps(spec), "model_name": model_name}
        if dataset_name:
            data["dataset_name"] = dataset_name
        with path.open("rb") as fh:
            return self._json("POST", "/v1/jobs", files={"file": (path.name, fh)}, data=data)

    def list_jobs(self) -> list[dict[str, Any]]:
        return _items(self._json("GET", "/v1/jobs"))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def wait_for_job(self, job_id: str, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        """Poll until the job is succeeded/failed/cancelled; returns the final job. Raises JobTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.get("status") in TERMINAL_STATUSES:
                return job
            if time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} still {job.get('status')} after {timeout:.0f}s")
            time.sleep(interval)

    def job_events(self, job_id: str, last_event_id: str | int | None = None,
                   timeout: float | None = None) -> Iterator[Event]:
        """Iterate the job's live events (one "epoch" event per epoch, then one "status" event); ends
        when the server closes the stream (job terminal). `last_event_id` resumes after that epoch."""
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

    # ---- models ------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        return _items(self._json("GET", "/v1/models"))

    def get_model(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/models/{name}")

    def get_version(self, name: str, version: int) -> dict[str, Any]:
        return self._json("GET", f"/v1/models/{name}/versions/{version}")

    def download_artifact(self, name: str, version: int, out: str | os.PathLike | None = None) -> bytes:
        """The artifact zip; also written to `out` when given."""
        content = self._request("GET", f"/v1/models/{name}/versions/{version}/artifact").content
        if out is not None:
            Path(out).write_bytes(content)
        return content

    def task_plot_png(self, name: str, version: int, task: str) -> bytes:
        return self._request("GET", f"/v1/models/{name}/versions/{version}/plots/{task}.png").content

    # ---- registry: aliases, notes, deletion (scope models:write) --------------------------------------
    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point `alias` at `version` (created or moved); returns the recorded move {from_version, to_version...}."""
        return self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/v1/models/{name}/aliases/{alias}")

    def rollback_alias(self, name: str, alias: str) -> dict[str, Any]:
        """Move `alias` back to its previous version (Conflict when there is none)."""
        return self._json("POST", f"/v1/models/{name}/aliases/{alias}/rollback")

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        return _items(self._json("GET", f"/v1/models/{name}/aliases/{alias}/history"))

    def update_version(self, name: str, version: int, *, description: str | None | object = ...,
                       tags: Sequence[str] | None | object = ...) -> dict[str, Any]:
        """Set a version's description and/or tags (arguments left out stay as they are)."""
        body: dict[str, Any] = {}
        if description is not ...:
            body["description"] = description
        if tags is not ...:
            body["tags"] = list(tags) if tags is not None else None  # type: ignore[arg-type]
        return self._json("PATCH", f"/v1/models/{name}/versions/{version}", json=body)

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version and its files (Conflict while an alias points at it)."""
        self._request("DELETE", f"/v1/models/{name}/versions/{version}")

    # ---- predict -----------------------------------------------------------------------------------
    def predict(self, name: str, images: Sequence[ImageInput] | ImageInput, version: int | None = None,
                *, alias: str | None = None, as_json: bool = False) -> dict[str, Any]:
        """Run the model on images (paths or raw bytes); multipart by default, base64 JSON with as_json.
        `version` or `alias` picks the version (default the latest); the answer's "model" says which served."""
        if isinstance(images, str | bytes | bytearray | os.PathLike):
            images = [images]
        params: dict[str, Any] | None = {"version": version} if version is not None else None
        if alias is not None:
            params = {**(params or {}), "alias": alias}
        path = f"/v1/models/{name}/predict"
        if as_json:
            blobs = [bytes(i) if isinstance(i, bytes | bytearray) else Path(i).read_bytes() for i in images]
            payload = {"images": [base64.b64encode(b).decode("ascii") for b in blobs]}
            return self._json("POST", path, params=params, json=payload)
        files = [_image_part(i, image) for i, image in enumerate(images)]
        return self._json("POST", path, params=params, files=files)


def _items(body: Any) -> list[dict[str, Any]]:
    """List endpoints answer a JSON list, or an object with "items"/"data"; accept both."""
    if isinstance(body, dict):
        for key in ("items", "data", "results"):
            if isinstance(body.get(key), list):
                return body[key]
    return body if isinstance(body, list) else []
