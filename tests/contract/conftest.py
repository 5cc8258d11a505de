# ruff: noqa: F811 - pytest fixtures imported from tests/api/conftest.py are parameters here
"""Contract tests (issue 12) run against the real app: the API fixtures (tests/api/conftest.py) on SQLite, plus
the same app bound to a fresh, migrated PostgreSQL database where concurrency matters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.config import Settings
from tests.api.conftest import (  # noqa: F401 - fixtures re-exported for this package
    ADMIN_KEY,
    ALL_SCOPES,
    Enqueued,
    app,
    auth,
    base_app,
    bearer,
    client,
    dataset_id,
    enqueued,
    example_npz,
    example_zip,
    make_key,
    migrate,
    register_model,
    settings,
    template_db,
    trained_artifact,
)

WRITER_SCOPES = [*ALL_SCOPES, "models:write"]


@pytest.fixture
def writer(make_key) -> dict[str, str]:
    """Headers of a team-alpha key with every non-admin scope, models:write included."""
    return bearer(make_key(WRITER_SCOPES, name="release-bot"))


@pytest.fixture
def pg_settings(tmp_path, postgres_url: str) -> Iterator[Settings]:
    migrate(postgres_url)
    yield Settings(DATA_DIR=tmp_path / "data", DATABASE_URL=postgres_url, BROKER_URL="memory://",
                   ADMIN_KEY=ADMIN_KEY, SECRET="test-secret", MAX_PREDICT_IMAGES=4)


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The test app behind a real uvicorn HTTP server on 127.0.0.1 (a free port), in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
