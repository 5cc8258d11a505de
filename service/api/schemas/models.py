"""Registered models, their versions and aliases, and /predict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas.base import (
    SpecJson,
    Timestamp,
)
from service.api.schemas.payloads import (
    HeadOutput,
    Metrics,
)

ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
Tag = Annotated[str, Field(min_length=1, max_length=100)]


class ModelRef(BaseModel):
    name: str
    version: int


class VersionRead(BaseModel):
    name: str
    version: int
    metrics: Metrics
    spec: SpecJson
    dataset_id: str | None
    job_id: str
    checksums: dict[str, str]
    created_at: Timestamp
    description: str | None = None
    tags: list[str] = []
    aliases: list[str] = Field(default=[], description="aliases pointing at this version")
    parent: ModelRef | None = Field(default=None, description="warm start: the version it was initialised from")


class VersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[Tag] | None = Field(default=None, max_length=50, description="replaces the version's tags")


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1, description="the version the alias points at from now on")


class AliasRead(BaseModel):
    alias: str
    version: int
    updated_at: Timestamp


class AliasEventRead(BaseModel):
    seq: int = Field(description="1, 2, ... per model: the order of the moves")
    alias: str
    action: Literal["set", "rollback", "delete"]
    from_version: int | None = Field(description="null: the alias was created")
    to_version: int | None = Field(description="null: the alias was deleted")
    key_id: str | None = Field(description="the API key that moved it (null: a server-side command)")
    key_name: str | None
    created_at: Timestamp


class AliasHistory(BaseModel):
    items: list[AliasEventRead]


class ModelSummary(BaseModel):
    name: str
    created_at: Timestamp
    latest_version: int | None
    latest: VersionRead | None


class ModelList(BaseModel):
    items: list[ModelSummary]


class ModelRead(BaseModel):
    name: str
    created_at: Timestamp
    latest_version: int | None
    aliases: list[AliasRead] = []
    versions: list[VersionRead]


class PredictCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(description="base64-encoded image files (PNG, JPEG, ...)")


class PredictRead(BaseModel):
    model: ModelRef = Field(description="the version that served the request")
    alias: str | None = Field(default=None, description="the alias it was resolved from, if one was asked for")
    predictions: list[dict[str, HeadOutput]] = Field(
        description="one {task: output} object per input image, in order; the output's shape follows the head type")
