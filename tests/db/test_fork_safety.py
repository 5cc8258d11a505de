"""Celery's prefork pool forks children from a parent whose threads (presence heartbeat, reaper) use the
database. A child must never use a connection the parent opened (two processes on one socket read each other's
answers), nor reset one on return. worker_process_init disposes the pool in the child; the engine itself also
refuses inherited connections (service/db/base.py: _owner_checkout, _owner_reset), tested here without it."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from service.db.base import make_engine

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_a_connection_inherited_through_fork_is_never_checked_out_in_the_child(postgres_url):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            parent_backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with engine.connect() as conn:  # the pool holds the parent's idle connection
                    child_backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                os.write(write, str(child_backend).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        child_backend = int(os.read(read, 64) or b"0")
        os.close(read)
        assert child_backend and child_backend != parent_backend
        with engine.connect() as conn:  # the parent's connection still works
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == parent_backend
    finally:
        engine.dispose()


def test_a_forked_child_sends_nothing_over_the_parents_socket_not_even_the_pre_ping(postgres_url):
    """The checkout guard runs after the pool's pre-ping: a child that still had the parent's pool would ping
    over the parent's socket (a desync when a parent thread is mid-transaction on it). The child's pool is
    emptied at fork, so the inherited connection is never touched."""
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            parent_dbapi = conn.connection.dbapi_connection
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                touched = []
                real_ping = engine.dialect.do_ping

                def ping(dbapi_connection):
                    touched.append(dbapi_connection is parent_dbapi)
                    return real_ping(dbapi_connection)

                engine.dialect.do_ping = ping
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                os.write(write, b"touched" if any(touched) else b"clean")
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        answer = os.read(read, 64)
        os.close(read)
        assert answer == b"clean"
    finally:
        engine.dispose()


def test_session_scope_uses_the_engine_the_worker_child_disposes(monkeypatch, tmp_path):
    """get_engine() (what worker_process_init disposed) and session_scope()'s engine were two lru_cache entries
    (keys () and (None,)): the child kept the parent's pool for every session_scope. One engine per URL now."""
    from service.config import get_settings
    from service.db import base

    monkeypatch.setenv("HEADWISE_DATABASE_URL", f"sqlite:///{tmp_path}/one.db")
    get_settings.cache_clear()
    base.get_engine.cache_clear()
    base.get_sessionmaker.cache_clear()
    try:
        engine = base.get_engine()
        assert base.get_engine(None) is engine
        assert base.get_engine(get_settings().DATABASE_URL) is engine
        with base.session_scope() as session:
            assert session.get_bind() is engine
        pool = engine.pool
        from worker.app import _fresh_connections_in_child

        monkeypatch.setattr("worker.app._preload_engine", lambda: None)
        _fresh_connections_in_child()
        with base.session_scope() as session:
            assert session.get_bind().pool is not pool
    finally:
        base.get_engine.cache_clear()
        base.get_sessionmaker.cache_clear()
        get_settings.cache_clear()
