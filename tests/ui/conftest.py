"""Fixtures for the UI tests: an in-process app on a fresh SQLite database (unit level), and a real
`headwise serve` (uvicorn API + embedded worker) subprocess for the end-to-end CLI and browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN_KEY = "ui-test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def app(tmp_path: Path):
    from service.api.app import create_app
    from service.config import Settings
    from service.db.base import Base, make_engine

    (tmp_path / "data").mkdir()
    settings = Settings(DATA_DIR=tmp_path / "data", ADMIN_KEY=ADMIN_KEY, SECRET="ui-test-secret")
    engine = make_engine(settings.DATABASE_URL)
    Base.metadata.create_all(engine)
    engine.dispose()
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


# ------------------------------------------------------------------------------------ a real server
class Live:
    """A running `headwise serve` (API under uvicorn + an embedded Celery worker, SQLite, SQLite broker)."""

    def __init__(self, url: str, data_dir: Path, env: dict[str, str], book, proc) -> None:
        self.url, self.key, self.data_dir, self.env, self.book, self.proc = url, ADMIN_KEY, data_dir, env, book, proc

    def log_sections(self) -> list[tuple[str, str]]:
        return self.book.log_sections()

    def client(self, timeout: float = 60.0):
        from service.client import Client

        return Client(self.url, self.key, timeout=timeout)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from tests.e2e.harness import LogBook, Proc, base_env, free_port, headwise_cmd, wait_healthy

    data_dir = tmp_path_factory.mktemp("ui-live")
    port = free_port()
    env = base_env(HEADWISE_DATA_DIR=str(data_dir), HEADWISE_ADMIN_KEY=ADMIN_KEY, HEADWISE_HOST="127.0.0.1",
                   HEADWISE_PORT=str(port), HEADWISE_PROGRESS_SECONDS="0", HEADWISE_REAPER_SECONDS="0")
    book = LogBook()
    proc = Proc("headwise serve", headwise_cmd("serve"), env, book.add("serve", data_dir / "serve.log"))
    server = Live(f"http://127.0.0.1:{port}", data_dir, env, book, proc)
    try:
        wait_healthy(server.url, proc)
        yield server
    finally:
        proc.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test that used the live server gets the tail of its log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        live_server = getattr(item, "funcargs", {}).get("live")
        if live_server is not None:
            for title, text in live_server.log_sections():
                report.sections.append((title, text))


def tiny_spec(epochs: int = 4) -> dict:
    """A spec for the engine's example dataset small enough to train in seconds on one CPU core."""
    from service.ml.examples import example_spec

    spec = example_spec(image_size=16, weighting="uncertainty", epochs=epochs)
    spec["model"].update(width=8, depth=1, head_hidden=16)
    spec["training"].update(device="cpu", batch_size=32, val_fraction=0.25)
    return spec
