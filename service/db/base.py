"""SQLAlchemy base with a naming convention, engine and session factory, ids and the clock leases use."""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import MetaData, create_engine, event, exc, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _owner_connect(_dbapi_conn, record) -> None:
    record.info["pid"] = os.getpid()


def _owner_reset(dbapi_conn, record, _reset_state) -> None:
    """The pool's reset-on-return, done only by the process that opened the connection. Celery's prefork pool
    forks while a thread of the parent (presence, reaper) may hold a checked-out connection; CPython drops that
    thread's frames in the child, the connection is finalised there and returned to the pool, and a plain
    reset would send ROLLBACK over the PARENT's socket in the middle of its transaction ("server closed the
    connection", "INTRANS", a lost lease). Errors here are handled by the pool (it invalidates the connection)."""
    if record.info.get("pid") == os.getpid():
        dbapi_conn.rollback()


def _owner_checkout(_dbapi_conn, record, proxy) -> None:
    """A connection opened by another process (inherited through fork) is never used: the pool opens a new one."""
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise exc.DisconnectionError(f"connection opened by pid {record.info.get('pid')}, not {os.getpid()}")


def _fork_safe(engine: Engine) -> Engine:
    event.listen(engine, "connect", _owner_connect)
    event.listen(engine, "reset", _owner_reset)
    event.listen(engine, "checkout", _owner_checkout)
    return engine


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # every engine this process made (make_engine)


def dispose_inherited_engines() -> None:
    """In a forked child: every engine forgets the pool it inherited, without closing anything (those sockets
    are the parent's). Needed although `_owner_checkout` refuses inherited connections: the pool's pre-ping
    runs BEFORE the checkout event, so a child would still send its ping over the parent's socket while a
    parent thread (presence, reaper) is in a transaction on it -- "EMPTY_QUERY from command 'BEGIN'",
    "INTRANS", and, when the failed ping invalidates the connection, a Terminate message that closes the
    parent's connection ("server closed the connection unexpectedly"). Runs at every os.fork (register_at_fork
    below), so no engine can be missed."""
    for engine in list(_engines):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=dispose_inherited_engines)


def make_engine(url: str) -> Engine:
    """Engines are fork-safe: the reset-on-return is the `_owner_reset` hook (pool_reset_on_return=None), and a
    forked child starts with an empty pool (dispose_inherited_engines)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_reset_on_return=None)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # connect_timeout: an unreachable server (dropped packets, not refused) fails in seconds -> 503, not a hang
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               pool_reset_on_return=None, connect_args={"connect_timeout": 5})
    _engines.add(engine)
    return _fork_safe(engine)


def _database_url(url: str | None) -> str:
    from service.config import get_settings

    return url or get_settings().DATABASE_URL


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache
def _sessionmaker_for(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=_engine_for(url), expire_on_commit=False)


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for url (default: the settings' DATABASE_URL). Cached by the RESOLVED url:
    get_engine(), get_engine(None) and get_engine(settings.DATABASE_URL) are one engine (an lru_cache on the
    argument made them three, and the worker's child disposed one that session_scope never used)."""
    return _engine_for(_database_url(url))


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return _sessionmaker_for(_database_url(url))


get_engine.cache_clear = _engine_for.cache_clear  # type: ignore[attr-defined]
get_sessionmaker.cache_clear = _sessionmaker_for.cache_clear  # type: ignore[attr-defined]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (worker and CLI use)."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(*, session: Session) -> None:
    session.execute(text("SELECT 1"))


def db_clock(session: Session) -> Any:
    """Timestamps for leases come from the database's clock where it has one (PostgreSQL: workers and reapers
    on different hosts compare one clock), else from this host's (SQLite: one host)."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def db_now(*, session: Session) -> datetime:
    """The clock db_clock() writes with, as a value (the reaper's reference for stale leases)."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(select(func.now())).scalar_one()
    return utcnow()
