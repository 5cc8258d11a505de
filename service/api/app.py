"""create_app(): the FastAPI application (lifespan, state, routers, error handlers). Run with
`uvicorn --factory service.api.app:create_app` or `headwise api`."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import sessionmaker

from service.api import (
    batch_predictions,
    capabilities,
    comparisons,
    datasets,
    docs,
    evaluations,
    events,
    health,
    imports,
    jobs,
    keys,
    metrics,
    models,
    plots,
    predict,
    registry,
    spec,
    ui,
    usage,
    v2,
    workers,
)
from service.api.errors import install_error_handlers
from service.api.openapi import add_links, add_models, body_models, document_errors, link_spec
from service.api.schemas import ErrorRead
from service.auth import KeyAuthenticator
from service.config import Settings, get_settings
from service.db.base import make_engine
from service.ml.losses import load_plugins
from service.observability import batch_observer
from service.serving.batcher import BatcherConfig
from service.serving.predictor_cache import PredictorCache
from service.serving.runtimes import load_predictor
from service.storage import storage_for

log = logging.getLogger("headwise.api")


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (predict, v2, health, imports, datasets, jobs, comparisons, models, registry, spec, capabilities,
                   batch_predictions, evaluations, keys, workers, usage):  # predict first: the hot path matches at once
        router.include_router(module.router)
    return router

DESCRIPTION = """Train masked multi-task CNNs on partially labelled image datasets and serve them.

Every `/v1` endpoint needs `Authorization: Bearer <key>`. Errors are `{"error": "<Kind>", "detail": "..."}`.

| endpoint | scope |
|---|---|
| `GET /v1/datasets`, `GET /v1/jobs` (and single items) | any valid key of the team |
| `POST/DELETE /v1/datasets` | `datasets:write` |
| `POST /v1/datasets/{id}/audit` | `datasets:write` or `jobs:write` |
| `POST /v1/jobs`, `POST /v1/jobs/{id}/cancel` | `jobs:write` |
| `GET /v1/models/...` | `models:read` |
| aliases (`PUT/DELETE`, rollback), `PATCH/DELETE /v1/models/{name}/versions/{v}` | `models:write` |
| `POST /v1/models/{name}/predict` | `predict` |
| `/v1/keys`, `GET /v1/workers` | `admin` |

`admin` implies every scope. Another team's resources answer 404.
"""


def _app_version() -> str:
    try:
        return version("headwise")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def _predictor_loader(settings: Settings, batching: BatcherConfig):
    threads = batching.torch_threads or os.cpu_count() or 1  # 0 = the runtime's default: every core
    return partial(load_predictor, device=settings.PREDICT_DEVICE, runtime=settings.PREDICT_RUNTIME, threads=threads)


def _error_openapi(app: FastAPI) -> None:
    """Request-validation errors are rendered as ErrorRead, not FastAPI's default HTTPValidationError: make the
    schema say so for every operation (also for routers that did not list 422 themselves)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            add_models(schema, body_models())  # bodies parsed by hand (one-call POST /v1/jobs)
            ref = {"$ref": "#/components/schemas/ErrorRead"}
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault("ErrorRead", ErrorRead.model_json_schema())
            for operations in schema.get("paths", {}).values():
                for op in operations.values():
                    response = op.get("responses", {}).get("422")
                    if response and "HTTPValidationError" in str(response):
                        response["content"] = {"application/json": {"schema": ref}}
            if "HTTPValidationError" not in str(schema["paths"]):
                components.pop("HTTPValidationError", None)
                components.pop("ValidationError", None)
            document_errors(schema)
            add_links(schema)  # create -> read, for clients and schemathesis' stateful phase
            schema = link_spec(schema)  # JobCreate.spec, JobRead.spec, ... -> the engine's Spec
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def init_state(app: FastAPI, settings: Settings) -> None:
    """(Re)bind the app to settings: database engine, storage, key cache, model cache."""
    storage = storage_for(settings)
    storage.ensure()
    storage.sweep_tmp()  # partial uploads / artifact staging of processes killed mid-write
    engine = make_engine(settings.DATABASE_URL)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)
    app.state.storage = storage
    app.state.authenticator = KeyAuthenticator(settings, app.state.sessionmaker)
    batching = BatcherConfig.from_settings(settings)
    app.state.predictors = PredictorCache(settings.MODEL_CACHE_SIZE, _predictor_loader(settings, batching),
                                          batching=batching, on_batch=batch_observer(app.state))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    log.info("Headwise API up (data dir %s)", app.state.storage.root)
    yield
    app.state.predictors.clear()
    app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="Headwise", version=_app_version(), description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")  # docs: served offline below
    settings = settings or get_settings()
    load_plugins()  # operators' `headwise.losses` entry points, before any spec is parsed or schema rendered
    init_state(app, settings)
    install_error_handlers(app)
    app.include_router(api_router())
    app.include_router(docs.docs_router(app))  # /docs, /redoc and their assets, no CDN
    for module in (events, plots, ui):
        app.include_router(module.router)
    metrics.install(app, settings)  # /metrics and the request-metrics middleware
    _error_openapi(app)
    return app
