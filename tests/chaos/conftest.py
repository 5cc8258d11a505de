"""Chaos tests: real `headwise api` / `headwise worker` processes that get killed, and PRIVATE Redis/PostgreSQL
servers that get stopped and restarted (tests/chaos/servers.py). All slow; a failing test shows its logs."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    claim_redis_db,
    create_database,
    drop_database,
    postgres_error,
    redis_error,
    release_redis_db,
    unavailable,
)
from tests.e2e.harness import (
    LogBook,
    Proc,
    base_env,
    expect,
    free_port,
    headwise_cmd,
    make_dataset,
    run_cli,
    tiny_spec,
    wait_healthy,
)

# Short leases so that a vanished worker is noticed in seconds (production: 60 s lease, 30 s reaper).
FAST = {"HEADWISE_JOB_LEASE_SECONDS": "8", "HEADWISE_REAPER_SECONDS": "1", "HEADWISE_HEARTBEAT_SECONDS": "0.5",
        "HEADWISE_PROGRESS_SECONDS": "0.2", "HEADWISE_CANCEL_POLL_SECONDS": "0.5"}
N_SAMPLES = 160


def chaos_spec(epochs: int) -> dict[str, Any]:
    """The e2e tiny model (image_size 16, width 8, depth 1): about 0.1-0.2 s per epoch on 160 images here."""
    spec = tiny_spec(epochs)
    # every epoch runs: these tests count them across a fault (early stopping, on by default, could end a run early)
    spec["training"].update(val_fraction=0.2, early_stopping=False)
    return spec


class Stack(LogBook):
    """api and worker processes sharing one configuration; each (re)start gets its own log file."""

    def __init__(self, tmp: Path, database_url: str, broker_url: str, **extra: str) -> None:
        super().__init__()
        self.tmp = tmp
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_key = "chaos-admin-" + secrets.token_urlsafe(24)
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = base_env(HEADWISE_DATABASE_URL=database_url, HEADWISE_BROKER_URL=broker_url,
                            HEADWISE_DATA_DIR=str(self.data_dir), HEADWISE_ADMIN_KEY=self.admin_key,
                            HEADWISE_SECRET=secrets.token_hex(32), HEADWISE_HOST="127.0.0.1",
                            HEADWISE_PORT=str(self.port), **FAST, **extra)
        self.procs: list[Proc] = []
        self.api: Proc | None = None
        self.client = httpx.Client(base_url=self.base_url, headers=self.auth(self.admin_key), timeout=60)
        self._n = 0

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def migrate(self) -> None:
        result = run_cli(["migrate"], self.env, self, "migrate")
        assert result.returncode == 0, f"headwise migrate failed:\n{result.stdout}\n{result.stderr}"

    def _start(self, name: str, cmd: list[str]) -> Proc:
        self._n += 1
        label = f"{name}-{self._n}"
        proc = Proc(label, cmd, self.env, self.add(label, self.tmp / f"{label}.log"))
        self.procs.append(proc)
        return proc

    def start_api(self) -> Proc:
        self.api = self._start("api", headwise_cmd("api"))
        wait_healthy(self.base_url, self.api)
        return self.api

    def start_worker(self) -> Proc:
        return self._start("worker", headwise_cmd("worker", "--queues", "gpu", "--concurrency", "1"))

    @staticmethod
    def kill(proc: Proc) -> None:
        """kill -9 the whole process group (a Celery worker: the parent and its training child)."""
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(15)

    def upload_example(self, n: int = N_SAMPLES) -> str:
        path = make_dataset(self.tmp / "dataset", n=n)
        with open(path, "rb") as fh:
            body = expect(self.client.post("/v1/datasets", files={"file": (path.name, fh)}), 201)
        return body["id"]

    def create_job(self, dataset_id: str, epochs: int, model: str, **training: Any) -> str:
        spec = chaos_spec(epochs)
        spec["training"].update(training)
        body = {"dataset_id": dataset_id, "model_name": model, "spec": spec}
        return expect(self.client.post("/v1/jobs", json=body), 202)["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return expect(self.client.get(f"/v1/jobs/{job_id}"), 200)

    def close(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def shared_pg_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL (never stopped by these tests)."""
    error = postgres_error()
    if error:
        unavailable(error)
    name, url = create_database("headwise_chaos")
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def shared_redis_url() -> Iterator[str]:
    """An unused database number on the shared Redis (never stopped by these tests)."""
    error = redis_error()
    if error:
        unavailable(error)
    token = secrets.token_hex(8)
    number = claim_redis_db(token)
    try:
        from tests.conftest import REDIS_URL

        yield f"{REDIS_URL.rstrip('/')}/{number}"
    finally:
        release_redis_db(number, token)


@contextmanager
def started_stack(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    """A migrated stack with the API running; its processes are stopped afterwards."""
    s = Stack(tmp_path, pg_url, redis_url)
    try:
        s.migrate()
        s.start_api()
        yield s
    finally:
        s.close()


@pytest.fixture
def stack(tmp_path: Path, shared_pg_url: str, shared_redis_url: str) -> Iterator[Stack]:
    """The stack on the shared PostgreSQL and Redis (tests that break one of them override this)."""
    with started_stack(tmp_path, shared_pg_url, shared_redis_url) as s:
        yield s
