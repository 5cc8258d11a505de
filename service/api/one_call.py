"""The one-call training request (`POST /v1/jobs` as multipart/form-data): `file` (.zip/.npz), `spec` (JSON
text), `model_name`, optional `dataset_name`. The spec and every label are checked before anything is written;
then the dataset and the job are created in ONE transaction (any failure: rolled back, files removed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session

from service.api import quotas
from service.api.comparisons import compare_field, compare_params
from service.api.errors import validation_detail
from service.api.ingest import Received, check_archive, dataset_name, spec_field, store_dataset
from service.api.schemas import NAME_PATTERN
from service.api.warm_start import init_from_params
from service.config import Settings
from service.db import jobs as jobs_repo
from service.db.tables import Job
from service.errors import ValidationError
from service.storage import Storage

Model = TypeVar("Model", bound=BaseModel)


class JobUpload(BaseModel):
    """multipart/form-data of the one-call `POST /v1/jobs` (documentation of the form; parsed by hand)."""

    model_config = ConfigDict(extra="forbid")
    file: bytes = Field(json_schema_extra={"format": "binary"}, description=".zip or .npz dataset")
    spec: str = Field(description="the task spec as JSON text (see GET /v1/spec/schema)")
    model_name: str = Field(pattern=NAME_PATTERN, description="registered model name (letters, digits, . _ -)")
    dataset_name: str | None = Field(default=None, max_length=200, description="default: the file's name")
    compare: str | None = Field(default=None, description="optional comparison block as JSON text (README "
                                "\"Comparison jobs\")")


def parse_json_body(raw: bytes, model: type[Model]) -> Model:
    """A JSON request body -> model; errors read like FastAPI's (422, 'body.<field>: ...')."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body: invalid JSON ({exc})") from None
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(validation_detail([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])) from None


def _form(got: Received) -> tuple[str, dict[str, Any], str]:
    """The text fields -> (model name, spec dict, dataset name); 422 naming the field."""
    unknown = sorted(set(got.fields) - {"spec", "model_name", "dataset_name", "compare"})
    if unknown:
        raise ValidationError(f"{unknown[0]}: unexpected field; send file, spec, model_name, dataset_name, compare")
    model_name = (got.fields.get("model_name") or "").strip()
    if not model_name:
        raise ValidationError("model_name: field required")
    if not re.fullmatch(NAME_PATTERN, model_name):
        raise ValidationError("model_name: letters, digits, '.', '_' and '-' (at most 100, starting with a letter "
                              "or digit)")
    spec = spec_field(got.fields.get("spec"))
    if spec is None:
        raise ValidationError("spec: field required (the task spec as JSON text)")
    return model_name, spec, dataset_name(got.fields.get("dataset_name"), got.filename, "dataset_name")


def create_from_upload(session: Session, storage: Storage, settings: Settings, got: Received, team: str,
                       weights_dir: Path | None = None) -> Job:
    """Blocking: check the form, spec and labels, then dataset + job in one committed transaction."""
    from service.api.jobs import audit_findings
    from service.ml.weights import check_pretrained

    model_name, spec, name = _form(got)
    table, resolved = check_archive(got, spec)
    check_pretrained(weights_dir, resolved)  # model.pretrained not installed -> 422
    params = init_from_params(session, team, resolved)  # 404 / 422 naming spec.training.init_from
    compare, runs = compare_params(compare_field(got.fields.get("compare")), resolved)  # 422 naming compare.<field>
    params = {**(params or {}), **compare} if compare else params
    dataset_id = None
    try:
        peak = quotas.admit_job(session, storage, settings, team, resolved, len(table.keys), runs)  # 422/507/429
        dataset = store_dataset(session, storage, got, table, team=team, name=name, settings=settings)
        dataset_id = dataset.id
        job = jobs_repo.create_job(session=session, team=team, dataset_id=dataset.id, model_name=model_name,
                                   spec=resolved.to_json_dict(), params=params,
                                   warnings=audit_findings(resolved, table), memory_bytes=peak)
        session.commit()  # the worker must find the row: enqueue only after the commit
    except BaseException:
        session.rollback()
        if dataset_id is not None:
            storage.remove_dataset(dataset_id)
        raise
    return job
