"""Typed Python client for the Headwise REST API (httpx + the API's own pydantic models).

    from service.client import Client
    with Client("http://127.0.0.1:8000", api_key="hw_...") as hw:
        ds = hw.upload_dataset("example.zip")
        job = hw.create_job(ds.id, "shapes", spec)
        for event in hw.job_events(job.id):
            print(event.event, event.data)
        print(hw.predict("shapes", ["cat.png"]).predictions)

Every method returns the response model of its endpoint (service/api/schemas.py: the wire format, shared with the
server so it is written once), bytes for files, or None for 204. Errors come back as `HeadwiseError` subclasses
carrying the server's `{"error": kind, "detail": ...}`. The /v2 Open Inference Protocol is left to its own clients
(tritonclient); tests/ui/test_client.py checks that every other route has a method here.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from service.api.schemas import (
    AliasEventRead,
    AliasHistory,
    AliasRead,
    AuditRead,
    BatchPredictionList,
    BatchPredictionRead,
    DatasetCreated,
    DatasetList,
    DatasetRead,
    EvaluationList,
    EvaluationRead,
    HealthRead,
    ImportRead,
    JobList,
    JobRead,
    KeyCreated,
    KeyList,
    KeyRead,
    ModelList,
    ModelRead,
    ModelSummary,
    PredictRead,
    ReadyRead,
    UsageRead,
    VersionRead,
    WorkerList,
)
from service.client.errors import JobTimeout, Unavailable, error_from_response
from service.client.sse import Event, iter_sse
from service.domain import TERMINAL_STATUSES, JobStatus

DEFAULT_URL = "http://127.0.0.1:8000"
ImageInput = str | os.PathLike | bytes
M = TypeVar("M", bound=BaseModel)


def _image_part(index: int, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, bytes | bytearray):
        return ("files", (f"image{index}", bytes(image), "application/octet-stream"))
    path = Path(image)
    return ("files", (path.name, path.read_bytes(), "application/octet-stream"))


def _drop_none(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class Client:
    """Synchronous client. URL and key default to HEADWISE_URL / HEADWISE_API_KEY (the client's own settings:
    it runs on other machines than the server and never loads the server's Settings)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 transport: httpx.BaseTransport | None = None, event_hooks: dict[str, list] | None = None):
        base_url = base_url or os.environ.get("HEADWISE_URL") or DEFAULT_URL
        self.api_key = api_key if api_key is not None else os.environ.get("HEADWISE_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport,
                                  event_hooks=event_hooks)

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

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    # ---- health ------------------------------------------------------------------------------------
    def health(self) -> HealthRead:
        return self._model(HealthRead, "GET", "/health")

    def ready(self) -> ReadyRead:
        return self._model(ReadyRead, "GET", "/ready")

    def metrics(self, token: str | None = None) -> str:
        """Prometheus text (GET /metrics); `token` when the server sets HEADWISE_METRICS_TOKEN."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self._request("GET", "/metrics", headers=headers).text

    # ---- datasets ----------------------------------------------------------------------------------
    def upload_dataset(self, file: str | os.PathLike | bytes, name: str | None = None,
                       filename: str | None = None) -> DatasetCreated:
        """Upload a .zip or .npz dataset (a path, or bytes with `filename` giving the extension)."""
        data = {"name": name} if name else {}
        if isinstance(file, bytes | bytearray):
            files = {"file": (filename or "dataset.zip", bytes(file))}
            return self._model(DatasetCreated, "POST", "/v1/datasets", files=files, data=data)
        path = Path(file)
        with path.open("rb") as fh:
            return self._model(DatasetCreated, "POST", "/v1/datasets", files={"file": (filename or path.name, fh)},
                               data=data)

    def import_dataset(self, source: str, name: str | None = None, spec: dict[str, Any] | None = None) -> ImportRead:
        """Start importing a dataset from object storage (`s3://...`, a prefix or an archive); a worker runs the
        upload's checks. Follow it with get_import()."""
        body = _drop_none(source=source, name=name, spec=spec)
        return self._model(ImportRead, "POST", "/v1/datasets", json=body)

    def get_import(self, import_id: str) -> ImportRead:
        return self._model(ImportRead, "GET", f"/v1/datasets/imports/{import_id}")

    def list_datasets(self, limit: int = 100, offset: int = 0) -> list[DatasetRead]:
        params = {"limit": limit, "offset": offset}
        return self._model(DatasetList, "GET", "/v1/datasets", params=params).items

    def get_dataset(self, dataset_id: str) -> DatasetRead:
        return self._model(DatasetRead, "GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def audit(self, dataset_id: str, spec: dict[str, Any]) -> AuditRead:
        return self._model(AuditRead, "POST", f"/v1/datasets/{dataset_id}/audit", json={"spec": spec})

    # ---- jobs --------------------------------------------------------------------------------------
    def spec_schema(self) -> dict[str, Any]:
        """The task spec's JSON Schema (GET /v1/spec/schema): validate specs before sending them."""
        return self._request("GET", "/v1/spec/schema").json()

    def create_job(self, dataset_id: str, model_name: str, spec: dict[str, Any]) -> JobRead:
        body = {"dataset_id": dataset_id, "model_name": model_name, "spec": spec}
        return self._model(JobRead, "POST", "/v1/jobs", json=body)

    def train(self, file: str | os.PathLike, spec: dict[str, Any], model_name: str,
              dataset_name: str | None = None) -> JobRead:
        """One call: upload the dataset and queue its training job (the spec and every label are checked first;
        on any error nothing is created). Returns the queued job, with its new `dataset_id`."""
        path = Path(file)
        data = _drop_none(spec=json.dumps(spec), model_name=model_name, dataset_name=dataset_name)
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

    # ---- models, versions, aliases -----------------------------------------------------------------
    def list_models(self) -> list[ModelSummary]:
        return self._model(ModelList, "GET", "/v1/models").items

    def get_model(self, name: str) -> ModelRead:
        return self._model(ModelRead, "GET", f"/v1/models/{name}")

    def get_version(self, name: str, version: int) -> VersionRead:
        return self._model(VersionRead, "GET", f"/v1/models/{name}/versions/{version}")

    def update_version(self, name: str, version: int, *, description: str | None | object = ...,
                       tags: Sequence[str] | None | object = ...) -> VersionRead:
        """Set a version's description and/or tags (arguments left out stay as they are; None clears)."""
        body: dict[str, Any] = {}
        if description is not ...:
            body["description"] = description
        if tags is not ...:
            body["tags"] = list(tags) if tags is not None else None  # type: ignore[arg-type]
        return self._model(VersionRead, "PATCH", f"/v1/models/{name}/versions/{version}", json=body)

    def delete_version(self, name: str, version: int) -> None:
        self._request("DELETE", f"/v1/models/{name}/versions/{version}")

    def download_artifact(self, name: str, version: int, out: str | os.PathLike | None = None) -> bytes:
        """The artifact zip; also written to `out` when given."""
        content = self._request("GET", f"/v1/models/{name}/versions/{version}/artifact").content
        if out is not None:
            Path(out).write_bytes(content)
        return content

    def download_onnx(self, name: str, version: int) -> bytes:
        return self._request("GET", f"/v1/models/{name}/versions/{version}/model.onnx").content

    def task_plot_png(self, name: str, version: int, task: str) -> bytes:
        return self._request("GET", f"/v1/models/{name}/versions/{version}/plots/{task}.png").content

    def list_aliases(self, name: str) -> list[AliasRead]:
        body = self._request("GET", f"/v1/models/{name}/aliases").content
        return TypeAdapter(list[AliasRead]).validate_json(body)

    def get_alias(self, name: str, alias: str) -> AliasRead:
        return self._model(AliasRead, "GET", f"/v1/models/{name}/aliases/{alias}")

    def set_alias(self, name: str, alias: str, version: int) -> AliasEventRead:
        return self._model(AliasEventRead, "PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/v1/models/{name}/aliases/{alias}")

    def rollback_alias(self, name: str, alias: str) -> AliasEventRead:
        return self._model(AliasEventRead, "POST", f"/v1/models/{name}/aliases/{alias}/rollback")

    def alias_history(self, name: str, alias: str) -> list[AliasEventRead]:
        """Every move of the alias, oldest first."""
        return self._model(AliasHistory, "GET", f"/v1/models/{name}/aliases/{alias}/history").items

    # ---- predict -----------------------------------------------------------------------------------
    def predict(self, name: str, images: Sequence[ImageInput] | ImageInput, version: int | None = None, *,
                alias: str | None = None, as_json: bool = False) -> PredictRead:
        """Run the model on images (paths or raw bytes); multipart by default, base64 JSON with as_json."""
        if isinstance(images, str | bytes | bytearray | os.PathLike):
            images = [images]
        params = _drop_none(version=version, alias=alias) or None
        path = f"/v1/models/{name}/predict"
        if as_json:
            blobs = [bytes(i) if isinstance(i, bytes | bytearray) else Path(i).read_bytes() for i in images]
            payload = {"images": [base64.b64encode(b).decode("ascii") for b in blobs]}
            return self._model(PredictRead, "POST", path, params=params, json=payload)
        files = [_image_part(i, image) for i, image in enumerate(images)]
        return self._model(PredictRead, "POST", path, params=params, files=files)

    # ---- engine capabilities ---------------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        """Head types, losses and weighting strategies with their parameters (GET /v1/capabilities; the engine
        describes them, so the answer is plain JSON rather than a fixed model)."""
        return self._request("GET", "/v1/capabilities").json()

    # ---- batch predictions --------------------------------------------------------------------------
    def create_batch_prediction(self, name: str, dataset_id: str, version: int | None = None,
                                alias: str | None = None) -> BatchPredictionRead:
        body = _drop_none(dataset_id=dataset_id, version=version, alias=alias)
        return self._model(BatchPredictionRead, "POST", f"/v1/models/{name}/batch-predictions", json=body)

    def list_batch_predictions(self, name: str) -> list[BatchPredictionRead]:
        return self._model(BatchPredictionList, "GET", f"/v1/models/{name}/batch-predictions").items

    def get_batch_prediction(self, name: str, batch_id: str) -> BatchPredictionRead:
        return self._model(BatchPredictionRead, "GET", f"/v1/models/{name}/batch-predictions/{batch_id}")

    def cancel_batch_prediction(self, name: str, batch_id: str) -> BatchPredictionRead:
        return self._model(BatchPredictionRead, "POST", f"/v1/models/{name}/batch-predictions/{batch_id}/cancel")

    def download_batch_results(self, name: str, batch_id: str, out: str | os.PathLike,
                               filename: str = "results.jsonl") -> Path:
        """Stream results.jsonl or results.csv to `out` (chunked: memory stays small for any size)."""
        path = f"/v1/models/{name}/batch-predictions/{batch_id}/{filename}"
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                with open(out, "wb") as fh:
                    for chunk in response.iter_bytes(1 << 16):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise Unavailable(0, "ConnectionError", f"{self.base_url}{path}: {exc}") from exc
        return Path(out)

    # ---- evaluations --------------------------------------------------------------------------------
    def create_evaluation(self, name: str, version: int | None, dataset_id: str, alias: str | None = None
                          ) -> EvaluationRead:
        """Queue an evaluation of version `version`, or of the version `alias` points at."""
        where = f"aliases/{alias}" if alias is not None else f"versions/{version}"
        return self._model(EvaluationRead, "POST", f"/v1/models/{name}/{where}/evaluations",
                           json={"dataset_id": dataset_id})

    def evaluation_plot_png(self, name: str, version: int, evaluation_id: str, task: str) -> bytes:
        path = f"/v1/models/{name}/versions/{version}/evaluations/{evaluation_id}/plots/{task}.png"
        return self._request("GET", path).content

    def get_evaluation(self, name: str, version: int, evaluation_id: str) -> EvaluationRead:
        return self._model(EvaluationRead, "GET", f"/v1/models/{name}/versions/{version}/evaluations/{evaluation_id}")

    def list_evaluations(self, name: str, version: int) -> list[EvaluationRead]:
        return self._model(EvaluationList, "GET", f"/v1/models/{name}/versions/{version}/evaluations").items

    def cancel_evaluation(self, name: str, version: int, evaluation_id: str) -> EvaluationRead:
        path = f"/v1/models/{name}/versions/{version}/evaluations/{evaluation_id}/cancel"
        return self._model(EvaluationRead, "POST", path)

    # ---- keys --------------------------------------------------------------------------------------
    def list_keys(self) -> list[KeyRead]:
        return self._model(KeyList, "GET", "/v1/keys").items

    def create_key(self, name: str, scopes: Sequence[str], team: str | None = None) -> KeyCreated:
        body = _drop_none(name=name, scopes=list(scopes), team=team)
        return self._model(KeyCreated, "POST", "/v1/keys", json=body)

    def revoke_key(self, key_id: str) -> KeyRead:
        return self._model(KeyRead, "DELETE", f"/v1/keys/{key_id}")

    # ---- workers -----------------------------------------------------------------------------------
    def usage(self) -> UsageRead:
        """The team's use of its quotas and the limits (README "Limits and quotas")."""
        return self._model(UsageRead, "GET", "/v1/usage")

    def list_workers(self) -> WorkerList:
        """Training workers registered in the database, alive or recently dead (scope admin)."""
        return self._model(WorkerList, "GET", "/v1/workers")
