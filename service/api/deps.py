"""FastAPI dependencies: settings, storage, DB session, the current principal and scope checks, enqueue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import KeyAuthenticator, Principal
from service.config import Settings
from service.errors import ForbiddenError
from service.serving.predictor_cache import PredictorCache
from service.storage import Storage

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer hw_...`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_authenticator(request: Request) -> KeyAuthenticator:
    return request.app.state.authenticator


def get_predictors(request: Request) -> PredictorCache:
    return request.app.state.predictors


def get_principal(
    authenticator: Annotated[KeyAuthenticator, Depends(get_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Any valid, unrevoked key (401 otherwise)."""
    return authenticator.authenticate(credentials.credentials if credentials else None)


async def bearer_key(request: Request) -> str | None:
    """The API key of `Authorization: Bearer <key>` as the declared HTTPBearer scheme parses it (None when
    absent). For routes that skip dependencies on their hot path (/predict)."""
    credentials = await bearer(request)
    return credentials.credentials if credentials else None


def check_scope(principal: Principal, *scopes: str) -> Principal:
    """The principal must hold one of `scopes` (admin holds all) -> else 403."""
    if not any(principal.has(s) for s in scopes):
        raise ForbiddenError(f"this API key lacks the scope {' or '.join(repr(s) for s in scopes)}")
    return principal


def require(*scopes: str) -> Callable[[Principal], Principal]:
    """A dependency: check_scope on the current principal."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return check_scope(principal, *scopes)

    check.__name__ = "require_" + "_or_".join(s.replace(":", "_") for s in scopes)
    return check


def get_enqueue() -> Callable[[str], None]:
    """The producer: overridden in tests to record job ids."""
    from service.queue import enqueue_training

    return enqueue_training


def get_broker_ping() -> Callable[[], bool]:
    from service.queue import ping_broker

    return ping_broker


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
EnqueueDep = Annotated[Callable[[str], None], Depends(get_enqueue)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]
