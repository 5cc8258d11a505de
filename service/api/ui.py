"""The dashboard: GET /ui renders one server-side template (no build step); its plain JS talks to the /v1 API
with the API key the user enters once (kept in sessionStorage) and reads live progress from the SSE endpoint
with fetch streaming. The job statuses come from the server (service.domain.JobStatus, rendered into the page's
data attributes), never from a copy in the JS. Static files are served from service/static by name (no directory traversal)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from service.domain import TERMINAL_STATUSES, JobStatus
from service.errors import NotFoundError

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = HERE / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
TABS = [("datasets", "Datasets"), ("jobs", "Jobs"), ("models", "Models"), ("try", "Try it")]
# the spec builder's key settings (spec path, label); an empty field means the server's default, shown greyed
SPEC_FIELDS = [("training.epochs", "epochs"), ("training.max_minutes", "max minutes"),
               ("training.batch_size", "batch size"), ("training.learning_rate", "learning rate"),
               ("training.val_fraction", "validation fraction"), ("training.seed", "seed"),
               ("model.image_size", "image size"), ("model.width", "width"), ("model.depth", "depth")]
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _version() -> str:
    try:
        return version("headwise")
    except PackageNotFoundError:
        return "dev"


@lru_cache(maxsize=1)
def spec_fields() -> list[tuple[str, str, str]]:
    """SPEC_FIELDS with each field's default, read from the engine's spec model (the one parse_spec uses)."""
    from service.api.openapi import spec_model

    fields = {"training": spec_model().model_fields["training"].annotation.model_fields,
              "model": spec_model().model_fields["model"].annotation.model_fields}
    out = []
    for path, label in SPEC_FIELDS:
        part, name = path.split(".")
        default = fields[part][name].default
        out.append((path, label, "none" if default is None else str(default)))
    return out


def static_url(name: str) -> str:
    path = STATIC / name
    stamp = int(path.stat().st_mtime) if path.is_file() else 0
    return f"/ui/static/{name}?v={stamp}"


@router.get("/ui", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    context = {"tabs": TABS, "version": _version(), "docs_url": "/docs", "api_root": "/v1",
               "static_url": static_url, "spec_fields": spec_fields(), "job_statuses": json.dumps([s.value for s in JobStatus]),
               "terminal_statuses": json.dumps(sorted(TERMINAL_STATUSES))}
    response = TEMPLATES.TemplateResponse(request, "ui.html", context)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/ui/")
def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/static/{name}")
def static_file(name: str) -> FileResponse:
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
    path = files.get(name)
    if path is None:
        raise NotFoundError(f"no static file '{name}'")
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
