"""A worker reports its memory budget (at registration) and the resident memory of its process tree (every
heartbeat): measured with a real child process that holds ~200 MB; listed by the registry (GET /v1/workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db import workers as workers_repo
from service.db.base import get_engine, session_scope
from service.db.tables import Worker
from tests.worker.conftest import clear_caches, make_env
from worker import presence

MB = 1024**2
HOLD = "import sys, time; b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('ready', " \
       "flush=True); time.sleep(60)"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'headwise.db'}", WORKER_MEMORY_BYTES=str(3 * 1024**3),
             HEARTBEAT_SECONDS="0.2")
    yield
    presence.stop()
    get_engine().dispose()
    clear_caches()


def test_tree_rss_counts_the_children():
    alone = presence.tree_rss()
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with_child = presence.tree_rss()
        assert with_child - alone >= 180 * MB, (alone, with_child)
        assert presence.tree_rss(child.pid) >= 200 * MB
    finally:
        child.kill()
        child.wait()
    assert presence.tree_rss(2**22 + 12345) in (0, None)  # no such process: nothing counted


def test_the_worker_row_carries_its_budget_and_usage(env):
    worker_id = presence.start(["training"])
    deadline = time.monotonic() + 20
    row = None
    while time.monotonic() < deadline:
        with session_scope() as session:
            row = session.get(Worker, worker_id)
            if row is not None and row.memory_used_bytes:
                break
        time.sleep(0.1)
    assert row is not None and row.memory_budget_bytes == 3 * 1024**3
    assert row.memory_used_bytes >= presence.tree_rss(os.getpid()) // 2  # this process, ~same moment
    with session_scope() as session:
        listed = {w["id"]: w for w in workers_repo.list_workers(session=session, lease_seconds=60)}
        fit = workers_repo.budgets_fit(session=session, lease_seconds=60, peak=4 * 1024**3)
    assert listed[worker_id]["memory_budget_bytes"] == 3 * 1024**3 and listed[worker_id]["memory_used_bytes"] > 0
    assert fit == {"alive": 1, "fit": 0, "budgets_bytes": [3 * 1024**3]}
