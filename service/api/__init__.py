"""HTTP routers, one per resource."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import datasets, health, jobs, keys, models, predict


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (predict, health, datasets, jobs, models, keys):  # predict first: the hot path matches at once
        router.include_router(module.router)
    return router
