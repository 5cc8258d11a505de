"""HTTP routers, one per resource."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import datasets, health, jobs, keys, models, predict


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (health, datasets, jobs, models, predict, keys):
        router.include_router(module.router)
    return router
