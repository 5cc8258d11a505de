"""The handlers rendering every error as {"error": kind, "detail": msg}: ServiceError (service/errors.py), HTTP
errors, request validation, engine SpecError/DataError (422) and a database that is down (503)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError

log = logging.getLogger("headwise.errors")


HTTP_KINDS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
    507: "InsufficientStorage",
    503: "ServiceUnavailable",
}


def error_response(status: int, kind: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def format_loc(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'tasks', 0, 'name') -> 'body.tasks[0].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_detail(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{format_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors) or "invalid"


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status_code, exc.kind, exc.message, exc.headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first matching route's)."""
    from starlette.routing import Match

    def served(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if served(m)]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = HTTP_KINDS.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such route"
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
        detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return error_response(exc.status_code, kind, detail, headers or None)


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "ValidationError", validation_detail(list(exc.errors())))


async def _unprocessable(kind: str, exc: Exception) -> JSONResponse:
    return error_response(422, kind, str(exc))


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "ServiceUnavailable", "the database is unavailable; try again shortly",
                          {"Retry-After": "5"})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", "internal server error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    try:  # engine errors: client mistakes in specs and data -> 422 with the engine's message
        from service.ml.data import DataError
        from service.ml.spec import SpecError
    except ImportError:  # pragma: no cover - the engine is always installed with the service
        log.warning("service.ml not importable; SpecError/DataError handlers not installed")
    else:

        async def _spec(_r: Request, exc: Exception) -> JSONResponse:
            return await _unprocessable("SpecError", exc)

        async def _data(_r: Request, exc: Exception) -> JSONResponse:
            return await _unprocessable("DataError", exc)

        app.add_exception_handler(SpecError, _spec)
        app.add_exception_handler(DataError, _data)
    # a database that is down or unreachable is a 503 (retry), not a 500
    app.add_exception_handler(sa_exc.OperationalError, _database_down)
    app.add_exception_handler(sa_exc.InterfaceError, _database_down)
    app.add_exception_handler(sa_exc.TimeoutError, _database_down)
    app.add_exception_handler(Exception, _internal)
