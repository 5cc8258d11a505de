"""The wire format's shared pieces: UTC timestamps, the spec's JSON type, the error body, pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: every stored time is UTC, so say so."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]
# The task spec: validated by the engine (service.ml.spec.parse_spec, whose messages name the field), documented
# as the engine's own model (service/api/openapi.py replaces the marked schema by a $ref to components/Spec).
SPEC_MARK = "x-headwise-spec"
# The audit takes any object and reports its spec errors (200 with spec_errors): documented as Spec or any object.
AuditSpecJson = Annotated[dict[str, Any], WithJsonSchema({"type": "object", SPEC_MARK: "audit"})]
SpecJson = Annotated[dict[str, Any], WithJsonSchema({"type": "object", SPEC_MARK: True})]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorRead(BaseModel):
    error: str = Field(examples=["NotFound"])
    detail: str = Field(examples=["dataset 'abc' not found"])


class Page(BaseModel):
    total: int
    limit: int
    offset: int


def _absent(value: Any) -> bool:
    """Optional engine fields are left out of answers when missing (not written as null)."""
    return value is None
