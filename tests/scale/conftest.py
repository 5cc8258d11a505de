"""tests/scale: workers seen and supervised, object storage, several processes. API-level tests reuse the
TestClient fixtures of tests/api; process tests use the e2e harness and the chaos stack."""

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
