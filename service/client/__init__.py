"""The Python SDK and the client CLI: httpx + pydantic only (no torch, sqlalchemy, celery or matplotlib), so
`import service.client` and `headwise jobs ls` start fast."""

from service.client.sdk import (
    TERMINAL_STATUSES,
    Client,
    Conflict,
    Event,
    Forbidden,
    HeadwiseError,
    Invalid,
    JobTimeout,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    error_from_response,
    iter_sse,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Client",
    "Conflict",
    "Event",
    "Forbidden",
    "HeadwiseError",
    "Invalid",
    "JobTimeout",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
    "iter_sse",
]
