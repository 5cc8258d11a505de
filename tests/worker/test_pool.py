"""worker/pool.py: with one job per child, a queued job starts within a second of the previous one, not on
Celery's 5 s pool check (celery/celery#9588). A real Celery worker on Redis runs trivial tasks back to back, each in
a fresh child, with Headwise's pool; each task records when it started and ended."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from tests.e2e.harness import wait_until
from worker.pool import POOL

REPO = Path(__file__).resolve().parents[2]
TASKS = 5

app = Celery("pool-test", broker=os.environ.get("HEADWISE_POOL_TEST_BROKER", "memory://"))
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=True, task_ignore_result=True,
                worker_max_tasks_per_child=1, worker_hijack_root_logger=False, worker_pool=POOL)


@app.task(name="pool-test.stamp")
def stamp(path: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {time.time()} ")
        time.sleep(0.2)
        f.write(f"{time.time()}\n")


@pytest.mark.slow
def test_queued_tasks_start_at_once_in_fresh_children(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "stamps.txt"
    env = {**os.environ, "HEADWISE_POOL_TEST_BROKER": redis_url, "PYTHONPATH": str(REPO)}
    app.conf.broker_url = redis_url
    for _ in range(TASKS):  # all queued before the worker starts: each next message arrives as a child finishes
        stamp.delay(str(out))
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.worker.test_pool:app", "worker",
                               "--concurrency", "1", "-l", "warning"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(f"{TASKS} tasks", lambda: out.exists() and len(out.read_text().splitlines()) >= TASKS, 60)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len({pid for pid, _, _ in rows}) == TASKS, "each task in a fresh child"
    gaps = [float(nxt[1]) - float(prev[2]) for prev, nxt in zip(rows, rows[1:], strict=False)]
    assert max(gaps) < 2.5, f"seconds between a task's end and the next one's start: {gaps}"
