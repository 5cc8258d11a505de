"""GET /metrics (Prometheus) and the HTTP middleware: request ids, per-route counts/latency, access log lines.

`install(app)` adds both; the Metrics object lives on app.state.metrics (see service/observability.py).
/metrics needs no API key (like /health) unless HEADWISE_METRICS_TOKEN is set: then `Authorization: Bearer
<token>` (Prometheus `authorization.credentials`). Metrics are per process.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from service.config import Settings
from service.errors import AuthError
from service.observability import (
    Metrics,
    configure_logging,
    request_id_from,
    request_id_var,
)

router = APIRouter(tags=["health"])
access_log = logging.getLogger("headwise.access")


@router.get("/metrics", include_in_schema=True, summary="Prometheus metrics (text exposition format)",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:  # sync: the scrape-time database read runs in the threadpool
    token = request.app.state.settings.METRICS_TOKEN
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthError("/metrics needs 'Authorization: Bearer <HEADWISE_METRICS_TOKEN>'")
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


def _route_template(scope: dict, status: int) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return "<unmatched>" if status == 404 else "<other>"


class ObservabilityMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead; streaming bodies untouched)."""

    def __init__(self, app, access: bool = False):
        self.app = app
        self.access = access  # one JSON access-log line per request (LOG_FORMAT=json)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                header = value.decode("latin-1")
                break
        rid = request_id_from(header)
        token = request_id_var.set(rid)
        status = 500
        started = time.perf_counter()
        app_state = getattr(scope.get("app"), "state", None)
        m: Metrics | None = getattr(app_state, "metrics", None)
        if m is not None:
            m.http_in_progress.inc()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope, status)
            if m is not None:
                m.http_in_progress.dec()
                m.observe_request(scope["method"], route, status, seconds)
            if self.access:
                access_log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000,
                                extra={"method": scope["method"], "path": scope["path"], "route": route,
                                       "status": status, "duration_ms": round(seconds * 1000, 2)})
            request_id_var.reset(token)


def install(app: FastAPI, settings: Settings) -> None:
    """Metrics registry (jobs read through app.state.sessionmaker at scrape time), middleware, /metrics, and
    logging (LOG_FORMAT, LOG_LEVEL) configured at startup, after the server (uvicorn) set up its own loggers."""
    init_metrics(app)
    app.add_middleware(ObservabilityMiddleware, access=settings.LOG_FORMAT == "json")
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
        async with inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan


def init_metrics(app: FastAPI) -> Metrics:
    m = Metrics()
    m.watch_jobs(lambda: app.state.sessionmaker())
    app.state.metrics = m
    return m
