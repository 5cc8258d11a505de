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
