"""Top-level test configuration: markers, service-availability helpers, fresh PostgreSQL/Redis fixtures.

Tests that need a real PostgreSQL or Redis use the ``postgres_url`` / ``redis_url`` fixtures (or the bare
``requires_postgres`` / ``requires_redis`` ones). Where the server is unreachable they skip with the reason,
except in CI (env ``CI`` set to true/1/yes), where they FAIL: CI starts both servers (``.ci/run``), so an
unreachable one is a broken run, never a silent pass.

Environment overrides:
  HEADWISE_TEST_PG_URL     admin URL of the PostgreSQL server
                           (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
  HEADWISE_TEST_REDIS_URL  Redis server (default redis://127.0.0.1:6379); tests claim a free db number on it
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ADMIN_URL = os.environ.get("HEADWISE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HEADWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_CLAIM_KEY = "headwise:test:claim"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip outside CI; fail inside CI (where every required service must be up)."""
    if in_ci():
        pytest.fail(
            f"{reason} (CI=true: CI provides everything the tests need, so this fails, not skips)",
            pytrace=False,
        )
    pytest.skip(reason)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _libpq_url(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what psycopg.connect accepts)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def postgres_error() -> str | None:
    """None when PostgreSQL answers a query at PG_ADMIN_URL, else a readable reason."""
    host, port = _host_port(PG_ADMIN_URL, 5432)
    if not _tcp_open(host, port):
        return f"PostgreSQL not reachable at {host}:{port}"
    try:
        import psycopg

        with psycopg.connect(_libpq_url(PG_ADMIN_URL), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"PostgreSQL at {host}:{port} not usable: {exc}"
    return None


def redis_error() -> str | None:
    host, port = _host_port(REDIS_URL, 6379)
    if not _tcp_open(host, port):
        return f"Redis not reachable at {host}:{port}"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {host}:{port} not usable: {exc}"
    return None


# --------------------------------------------------------------------------------------------- markers


SLOW_DIRS = ("/e2e/", "/chaos/")  # every test in these folders runs real processes: marked `slow`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in "/" + item.nodeid.replace("\\", "/") for d in SLOW_DIRS):
            item.add_marker(pytest.mark.slow)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test gets the log tails of the processes its fixtures started (fixtures with log_sections())."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            sections = getattr(value, "log_sections", None)
            if callable(sections):
                for title, text in sections():
                    report.sections.append((title, text))


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def requires_postgres() -> None:
    error = postgres_error()
    if error:
        unavailable(error)


@pytest.fixture
def requires_redis() -> None:
    error = redis_error()
    if error:
        unavailable(error)


def create_database(prefix: str = "headwise_test") -> tuple[str, str]:
    """Create a fresh, uniquely named PostgreSQL database; returns (name, SQLAlchemy URL)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(PG_ADMIN_URL), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, _with_database(PG_ADMIN_URL, name)


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq_url(PG_ADMIN_URL), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(requires_postgres: None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL, psycopg 3 driver), dropped afterwards."""
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)


def claim_redis_db(token: str) -> int:
    """Claim an empty Redis database number (1..15) with a marker key; raises RuntimeError when none is free."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_URL.rstrip('/')}/{number}", socket_timeout=5)
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True, ex=3600):
            if client.dbsize() == 1:  # nobody else wrote there in between
                return number
            client.delete(REDIS_CLAIM_KEY)
    raise RuntimeError("no empty Redis database (1..15) to claim for the test")


def release_redis_db(number: int, token: str) -> None:
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL.rstrip('/')}/{number}", socket_timeout=5)
    if client.get(REDIS_CLAIM_KEY) == token.encode():
        client.flushdb()


@pytest.fixture
def redis_url(requires_redis: None) -> Iterator[str]:
    """redis://host:port/<n> on a database number nobody else uses right now; flushed afterwards."""
    token = secrets.token_hex(8)
    number = claim_redis_db(token)
    try:
        yield f"{REDIS_URL.rstrip('/')}/{number}"
    finally:
        release_redis_db(number, token)
