"""API keys: the rows behind bearer authentication (service/auth.py hashes and caches, this module stores)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.db.tables import ApiKey


def insert_api_key(
    *, session: Session, name: str, team: str, scopes: list[str], prefix: str, key_hash: str
) -> ApiKey:
    row = ApiKey(name=name, team=team, scopes=list(scopes), prefix=prefix, key_hash=key_hash)
    session.add(row)
    session.flush()
    return row


def get_api_key_by_prefix(*, session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()


def get_api_key(*, session: Session, key_id: str, team: str | None = None) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if team is not None:
        stmt = stmt.where(ApiKey.team == team)
    return session.scalars(stmt).first()


def find_api_keys(*, session: Session, id_or_prefix: str) -> list[ApiKey]:
    """Keys whose id equals, or whose prefix starts with, the given text (CLI revoke)."""
    stmt = select(ApiKey).where(
        or_(ApiKey.id == id_or_prefix, ApiKey.prefix.startswith(id_or_prefix, autoescape=True))
    )
    return list(session.scalars(stmt))


def list_api_keys(*, session: Session, team: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if team is not None:
        stmt = stmt.where(ApiKey.team == team)
    return list(session.scalars(stmt))


def count_api_keys(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def revoke_api_key(*, session: Session, key: ApiKey, when: datetime) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = when
        session.flush()
    return key


def touch_api_key(*, session: Session, key_id: str, when: datetime) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
