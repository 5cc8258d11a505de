"""Fixtures for the UI tests: an in-process app on a fresh SQLite database (unit level), and a real
`headwise serve` (uvicorn API + embedded worker) subprocess for the end-to-end CLI and browser tests."""

from __future__ import annotations

import os
import shutil
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


# ------------------------------------------------------------------------------------ a real browser
CHROMIUM = os.environ.get("HEADWISE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module (skipped without it, except in CI)."""
    from tests.conftest import unavailable

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, live):
    """A fresh browser context on the live server; page.errors collects page errors and console errors."""
    # bypass_csp: Playwright evaluates its wait_for_function predicates with eval, which the page CSP forbids
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url, bypass_csp=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.errors = errors
    yield pg
    context.close()


def tiny_spec(epochs: int = 4) -> dict:
    """A spec for the engine's example dataset small enough to train in seconds on one CPU core."""
    from service.ml.examples import example_spec

    spec = example_spec(image_size=16, weighting="uncertainty", epochs=epochs)
    spec["model"].update(width=8, depth=1, head_hidden=16)
    spec["training"].update(device="cpu", batch_size=32, val_fraction=0.25)
    return spec
