"""Client methods for the jobs that run a model version: batch predictions and evaluations."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from service.api.schemas import BatchPredictionList, BatchPredictionRead, EvaluationList, EvaluationRead
from service.client.errors import Unavailable, error_from_response
from service.client.sdk.base import Base, _drop_none


class RunsAPI(Base):
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
