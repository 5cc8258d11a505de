"""API keys."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas.base import (
    NAME_PATTERN,
    Timestamp,
    _Read,
)
from service.domain import SCOPES


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Annotated[str, Field(json_schema_extra={"enum": list(SCOPES)})]] = Field(  # checked by auth
        min_length=1, examples=[["datasets:write", "jobs:write", "models:read", "predict"]])
    team: str | None = Field(default=None, pattern=NAME_PATTERN, description="defaults to the caller's team")


class KeyRead(_Read):
    id: str
    name: str
    team: str
    prefix: str
    scopes: list[str]
    created_at: Timestamp
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class KeyCreated(KeyRead):
    key: str = Field(description="the API key; shown only in this response")


class KeyList(BaseModel):
    items: list[KeyRead]
