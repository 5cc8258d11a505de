"""The Python SDK and the client CLI: httpx + pydantic only (no torch, sqlalchemy, celery or matplotlib), so
`import service.client` and `headwise jobs ls` start fast. Response types are the API's own pydantic models
(service/api/schemas/, which imports nothing but pydantic and service.domain).

Names are loaded on first use (PEP 562), so importing the client CLI module for `headwise --help` does not load
httpx or pydantic."""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"  # the server's default HEADWISE_HOST:HEADWISE_PORT
_WHERE = {
    "Client": "service.client.sdk",
    "Event": "service.client.sse",
    "iter_sse": "service.client.sse",
    "TERMINAL_STATUSES": "service.domain",
    "JobStatus": "service.domain",
    **{name: "service.client.errors" for name in (
        "Conflict", "Forbidden", "HeadwiseError", "Invalid", "JobTimeout", "NotFound", "TooLarge", "Unauthorized",
        "Unavailable", "error_from_response")},
}
__all__ = sorted([*_WHERE, "DEFAULT_URL"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'service.client' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
