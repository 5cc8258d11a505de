"""Client methods for /v1/models: versions, artifacts, plots, aliases, and predict."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from service.api.schemas import (
    AliasEventRead,
    AliasHistory,
    AliasRead,
    ModelList,
    ModelRead,
    ModelSummary,
    PredictRead,
    VersionRead,
)
from service.client.sdk.base import Base, ImageInput, _drop_none, _image_part


class ModelsAPI(Base):
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
