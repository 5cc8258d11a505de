"""Client methods for /v1/datasets: uploads, imports from object storage, audits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from service.api.schemas import AuditRead, DatasetCreated, DatasetList, DatasetRead, ImportRead
from service.client.sdk.base import Base, _drop_none


class DatasetsAPI(Base):
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
