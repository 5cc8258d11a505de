"""The client's exceptions: one per error kind the server answers with, carrying its status, kind and detail."""

from __future__ import annotations

import json

import httpx


class HeadwiseError(Exception):
    """An error answer from the server: HTTP status, error kind and detail."""

    status: int = 0

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(status, kind, detail)
        self.status = status
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.detail}"


class Invalid(HeadwiseError):  # 400, 415, 422
    pass


class Unauthorized(HeadwiseError):  # 401
    pass


class Forbidden(HeadwiseError):  # 403
    pass


class NotFound(HeadwiseError):  # 404
    pass


class Conflict(HeadwiseError):  # 409
    pass


class TooLarge(HeadwiseError):  # 413
    pass


class Unavailable(HeadwiseError):  # 503 (and connection failures)
    pass


class JobTimeout(TimeoutError):
    """wait_for_job gave up before the job ended."""


_BY_STATUS: dict[int, type[HeadwiseError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: Invalid,
    422: Invalid,
    503: Unavailable,
}


def error_from_response(response: httpx.Response) -> HeadwiseError:
    """Build the typed exception for a non-2xx response."""
    kind, detail = f"HTTP{response.status_code}", response.reason_phrase or ""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        kind = str(body.get("error") or kind)
        raw = body.get("detail", detail)
        detail = raw if isinstance(raw, str) else json.dumps(raw)
    elif response.text:
        detail = response.text[:500]
    cls = _BY_STATUS.get(response.status_code, HeadwiseError)
    return cls(response.status_code, kind, detail)
