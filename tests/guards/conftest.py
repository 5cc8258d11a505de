"""Guards tests: real `headwise api` / `headwise worker` processes (the chaos Stack) on the shared PostgreSQL and
Redis, with per-test settings; team keys; a small tmpfs data directory for the disk-full cases."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chaos.conftest import Stack, shared_pg_url, shared_redis_url  # noqa: F401 - fixtures
from tests.e2e.harness import expect

TEAM_SCOPES = ["datasets:write", "jobs:write", "models:read", "predict"]


def team_key(stack: Stack, team: str) -> dict[str, str]:
    body = expect(stack.client.post("/v1/keys", json={"name": f"{team}-key", "scopes": TEAM_SCOPES,
                                                       "team": team}), 201)
    return stack.auth(body["key"])


@contextmanager
def guard_stack(tmp_path: Path, pg_url: str, redis_url: str, **extra: str) -> Iterator[Stack]:
    """A migrated stack with `extra` settings for every process; the API is started, workers on demand."""
    s = Stack(tmp_path, pg_url, redis_url, **extra)
    try:
        s.migrate()
        s.start_api()
        yield s
    finally:
        s.close()


@pytest.fixture
def make_stack(tmp_path: Path, shared_pg_url: str, shared_redis_url: str) -> Iterator[Callable[..., Stack]]:  # noqa: F811
    with_stacks: list = []

    def make(**extra: str) -> Stack:
        cm = guard_stack(tmp_path, shared_pg_url, shared_redis_url, **extra)
        with_stacks.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(with_stacks):
        cm.__exit__(None, None, None)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at tmp_path/data (the stack's DATA_DIR); skips when mounting is not permitted."""
    mount = tmp_path / "data"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
