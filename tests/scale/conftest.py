"""tests/scale: workers seen and supervised, object storage, several processes. API-level tests reuse the
TestClient fixtures of tests/api; process tests use the e2e harness and the chaos stack."""

import pytest  # noqa: E402

from tests.api.conftest import (  # noqa: F401 - pytest fixtures
    app,
    auth,
    base_app,
    client,
    dataset_id,
    enqueued,
    example_zip,
    make_key,
    settings,
    template_db,
)
from tests.chaos.conftest import shared_pg_url, shared_redis_url, stack  # noqa: F401,E402 - pytest fixtures
from tests.scale.s3server import MotoS3  # noqa: E402


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch) -> MotoS3:
    """A fresh bucket on the session's moto server; the AWS_* variables point boto3 at it."""
    import secrets

    moto_server.bucket = "headwise-" + secrets.token_hex(4)
    moto_server.create_bucket()
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    return moto_server
