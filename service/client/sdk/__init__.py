"""Typed Python client for the Headwise REST API (httpx + the API's own pydantic models).

    from service.client import Client
    with Client("http://127.0.0.1:8000", api_key="hw_...") as hw:
        ds = hw.upload_dataset("example.zip")
        job = hw.create_job(ds.id, "shapes", spec)
        for event in hw.job_events(job.id):
            print(event.event, event.data)
        print(hw.predict("shapes", ["cat.png"]).predictions)

Every method returns the response model of its endpoint (service/api/schemas/: the wire format, shared with the
server so it is written once), bytes for files, or None for 204. Errors come back as `HeadwiseError` subclasses
carrying the server's `{"error": kind, "detail": ...}`. The /v2 Open Inference Protocol is left to its own clients
(tritonclient); tests/api/test_client.py checks that every other route has a method here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.api.schemas import HealthRead, KeyCreated, KeyList, KeyRead, ReadyRead, UsageRead, WorkerList
from service.client.sdk.base import DEFAULT_URL, ImageInput, _drop_none
from service.client.sdk.datasets import DatasetsAPI
from service.client.sdk.jobs import JobsAPI
from service.client.sdk.models import ModelsAPI
from service.client.sdk.runs import RunsAPI

__all__ = ["DEFAULT_URL", "Client", "ImageInput"]


class Client(DatasetsAPI, JobsAPI, ModelsAPI, RunsAPI):
    """Synchronous client. URL and key default to HEADWISE_URL / HEADWISE_API_KEY (the client's own settings:
    it runs on other machines than the server and never loads the server's Settings). One method per REST
    operation, grouped by resource in the mixins of this package; the service-wide ones are here."""

    def health(self) -> HealthRead:
        return self._model(HealthRead, "GET", "/health")

    def ready(self) -> ReadyRead:
        return self._model(ReadyRead, "GET", "/ready")

    def metrics(self, token: str | None = None) -> str:
        """Prometheus text (GET /metrics); `token` when the server sets HEADWISE_METRICS_TOKEN."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self._request("GET", "/metrics", headers=headers).text

    def capabilities(self) -> dict[str, Any]:
        """Head types, losses and weighting strategies with their parameters (GET /v1/capabilities; the engine
        describes them, so the answer is plain JSON rather than a fixed model)."""
        return self._request("GET", "/v1/capabilities").json()

    def list_keys(self) -> list[KeyRead]:
        return self._model(KeyList, "GET", "/v1/keys").items

    def create_key(self, name: str, scopes: Sequence[str], team: str | None = None) -> KeyCreated:
        body = _drop_none(name=name, scopes=list(scopes), team=team)
        return self._model(KeyCreated, "POST", "/v1/keys", json=body)

    def revoke_key(self, key_id: str) -> KeyRead:
        return self._model(KeyRead, "DELETE", f"/v1/keys/{key_id}")

    def usage(self) -> UsageRead:
        """The team's use of its quotas and the limits (README "Limits and quotas")."""
        return self._model(UsageRead, "GET", "/v1/usage")

    def list_workers(self) -> WorkerList:
        """Training workers registered in the database, alive or recently dead (scope admin)."""
        return self._model(WorkerList, "GET", "/v1/workers")
