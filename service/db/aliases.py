"""The registry's aliases (named pointers at versions) with their history, version notes and version deletion.

Every alias change runs under a lock on the registered-model row (an UPDATE of it: a row lock on PostgreSQL,
the database write lock on SQLite), so concurrent moves serialize: each history row's `from_version` is the
version the alias really pointed at, and history sequence numbers (`seq`) are gap-free per model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db.base import db_clock
from service.db.tables import AliasEvent, ModelAlias, ModelVersion, RegisteredModel
from service.errors import ConflictError, NotFoundError


def lock_model(*, session: Session, model_id: str) -> None:
    """Take the model's row lock for the rest of the transaction (no-op UPDATE)."""
    session.execute(
        update(RegisteredModel).where(RegisteredModel.id == model_id)
        .values(last_version=RegisteredModel.last_version)
    )


def list_aliases(*, session: Session, model_id: str) -> list[tuple[ModelAlias, int]]:
    """(alias row, version number) pairs of a model, by alias name."""
    stmt = (
        select(ModelAlias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
        .where(ModelAlias.model_id == model_id)
        .order_by(ModelAlias.alias)
    )
    return [(row, number) for row, number in session.execute(stmt)]


def resolve_alias(*, session: Session, model_id: str, alias: str) -> ModelVersion | None:
    stmt = (
        select(ModelVersion)
        .join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
        .where(ModelAlias.model_id == model_id, ModelAlias.alias == alias)
    )
    return session.scalars(stmt).first()


def _version(session: Session, model_id: str, number: int) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == number)
    ).first()


def _record(session: Session, model_id: str, alias: str, action: str, before: int | None, after: int | None,
            who: tuple[str | None, str | None]) -> AliasEvent:
    seq = session.execute(select(func.max(AliasEvent.seq)).where(AliasEvent.model_id == model_id)).scalar_one()
    event = AliasEvent(model_id=model_id, seq=(seq or 0) + 1, alias=alias, action=action, from_version=before,
                       to_version=after, key_id=who[0], key_name=who[1], created_at=db_clock(session))
    session.add(event)
    session.flush()
    return event


def set_alias(*, session: Session, model_id: str, alias: str, version: int, who: tuple[str | None, str | None],
              action: str = "set") -> AliasEvent:
    """Point `alias` at `version` (404 if it does not exist) and record the move, atomically."""
    lock_model(session=session, model_id=model_id)
    target = _version(session, model_id, version)
    if target is None:
        raise NotFoundError(f"version: this model has no version {version}")
    row = session.scalars(
        select(ModelAlias).where(ModelAlias.model_id == model_id, ModelAlias.alias == alias)
        .execution_options(populate_existing=True)
    ).first()
    before = None
    if row is None:
        session.add(ModelAlias(model_id=model_id, alias=alias, version_id=target.id, updated_at=db_clock(session)))
    else:
        before = session.execute(select(ModelVersion.version).where(ModelVersion.id == row.version_id)).scalar_one()
        row.version_id, row.updated_at = target.id, db_clock(session)
    session.flush()
    return _record(session, model_id, alias, action, before, version, who)


def delete_alias(*, session: Session, model_id: str, alias: str, who: tuple[str | None, str | None]) -> AliasEvent:
    lock_model(session=session, model_id=model_id)
    current = resolve_alias(session=session, model_id=model_id, alias=alias)
    if current is None:
        raise NotFoundError(f"alias '{alias}' not found")
    session.execute(delete(ModelAlias).where(ModelAlias.model_id == model_id, ModelAlias.alias == alias))
    return _record(session, model_id, alias, "delete", current.version, None, who)


def rollback_alias(*, session: Session, model_id: str, alias: str, who: tuple[str | None, str | None]) -> AliasEvent:
    """Move `alias` back to the version it pointed at before its current one was set; repeated rollbacks walk
    further back (each rollback cancels one earlier move). 409 when there is nothing to go back to."""
    lock_model(session=session, model_id=model_id)
    if resolve_alias(session=session, model_id=model_id, alias=alias) is None:
        raise NotFoundError(f"alias '{alias}' not found")
    events = session.scalars(
        select(AliasEvent).where(AliasEvent.model_id == model_id, AliasEvent.alias == alias)
        .order_by(AliasEvent.seq.desc())
    )
    skip, target = 0, None
    for event in events:
        if event.action == "rollback":
            skip += 1
        elif event.action == "delete":
            break
        elif skip:
            skip -= 1
        else:
            target = event.from_version
            break
    if target is None:
        raise ConflictError(f"alias '{alias}' has no earlier version to roll back to")
    if _version(session, model_id, target) is None:
        raise ConflictError(f"alias '{alias}' would roll back to version {target}, which was deleted")
    return set_alias(session=session, model_id=model_id, alias=alias, version=target, who=who, action="rollback")


def alias_history(*, session: Session, model_id: str, alias: str | None = None) -> list[AliasEvent]:
    stmt = select(AliasEvent).where(AliasEvent.model_id == model_id)
    if alias is not None:
        stmt = stmt.where(AliasEvent.alias == alias)
    return list(session.scalars(stmt.order_by(AliasEvent.seq)))


def aliases_of(*, session: Session, version_id: str) -> list[str]:
    stmt = select(ModelAlias.alias).where(ModelAlias.version_id == version_id).order_by(ModelAlias.alias)
    return list(session.scalars(stmt))


def update_version(*, session: Session, version: ModelVersion, changes: dict[str, Any]) -> None:
    """Set `description` and/or `tags` (only the keys present in `changes`)."""
    for key in ("description", "tags"):
        if key in changes:
            setattr(version, key, changes[key])
    session.flush()


def delete_version(*, session: Session, model_id: str, version: int) -> str:
    """Delete a version row (409 while an alias points at it) -> its artifact path, for the caller to remove
    after the commit. The number stays allocated (RegisteredModel.last_version)."""
    lock_model(session=session, model_id=model_id)
    mv = _version(session, model_id, version)
    if mv is None:
        raise NotFoundError(f"this model has no version {version}")
    held = aliases_of(session=session, version_id=mv.id)
    if held:
        raise ConflictError(f"version {version} is the target of alias(es) {', '.join(held)}; move them first")
    path = mv.artifact_path
    session.delete(mv)
    session.flush()
    return path
