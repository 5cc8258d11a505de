"""Issue 5 on the real app: /predict through the MicroBatcher (coalescing, order, 503 on overload), warm-up on
load, /metrics with route templates and batch histograms, X-Request-ID."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import png_bytes


def metric(text: str, name: str, **labels) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class Delta:
    """Metric changes since construction (the app, and its registry, live for the whole test session)."""

    def __init__(self, app):
        self.client = TestClient(app)
        self.before = self.client.get("/metrics").text

    def __call__(self, name: str, **labels) -> float:
        return metric(self.client.get("/metrics").text, name, **labels) - metric(self.before, name, **labels)


def close(a, b, tol: float = 1e-5) -> bool:
    """Equal up to float noise (a batch of 16 and a batch of 1 round differently)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    return a == b


def colours(n: int) -> list[bytes]:
    return [png_bytes(16, ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)) for i in range(n)]


def test_concurrent_predicts_are_batched_and_each_gets_its_own_results(app, auth, register_model, trained_artifact):
    from service.ml.inference import Predictor

    register_model("shapes")
    images = colours(16)
    expected = Predictor.load(trained_artifact).predict([Image.open(io.BytesIO(b)) for b in images])

    delta = Delta(app)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth) as client:
            first = await client.post("/v1/models/shapes/predict", files=[("files", ("a", images[0]))])
            assert first.status_code == 200, first.text
            batcher = app.state.predictors.peek(app.state.predictors.keys()[0]).batcher
            network = batcher.run_batch
            batcher.run_batch = lambda batch: time.sleep(0.05) or network(batch)  # requests queue meanwhile
            return await asyncio.gather(*(
                client.post("/v1/models/shapes/predict", files=[("files", (f"i{i}", b))], headers={"X-Request-ID": f"r{i}"})
                for i, b in enumerate(images)))

    responses = asyncio.run(main())
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == f"r{i}"
        assert close(r.json()["predictions"], json.loads(json.dumps([expected[i]]))), i
    cache = app.state.predictors
    assert cache.loads == 1
    entry = cache.peek(cache.keys()[0])
    assert 1 < entry.batcher.batches < 17  # 17 requests, fewer network runs
    assert delta("headwise_predict_images_total") == 17
    assert delta("headwise_predict_batch_images_count") == entry.batcher.batches
    assert delta("headwise_predict_queue_wait_seconds_count") == 17
    assert delta("headwise_http_requests_total", route="/v1/models/{name}/predict", status="200") == 17


def test_overloaded_queue_answers_503_with_retry_after(client: TestClient, auth, register_model):
    register_model("shapes")
    delta = Delta(client.app)
    files = [("files", ("a", png_bytes()))]
    assert client.post("/v1/models/shapes/predict", headers=auth, files=files).status_code == 200
    cache = client.app.state.predictors
    cache.peek(cache.keys()[0]).batcher.max_queue = 0  # nothing may wait
    r = client.post("/v1/models/shapes/predict", headers=auth, files=files)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "ServiceUnavailable" and "queue is full" in r.json()["detail"]
    assert delta("headwise_predict_overloaded_total") == 1
    assert delta("headwise_http_requests_total", route="/v1/models/{name}/predict", status="503") == 1


def test_model_is_warmed_up_on_load(client: TestClient, auth, register_model, monkeypatch):
    from service.ml.inference import Predictor

    sizes = []
    original = Predictor.predict_arrays
    monkeypatch.setattr(Predictor, "predict_arrays", lambda self, batch, **kw: sizes.append(len(batch))
                        or original(self, batch, **kw))
    register_model("shapes")
    r = client.post("/v1/models/shapes/predict", headers=auth, files=[("files", ("a", png_bytes()))])
    assert r.status_code == 200
    assert sizes == [1, client.app.state.predictors.batching.max_batch, 1]  # warm-up 1 + max_batch, then the request


def test_metrics_endpoint_is_public_and_counts_jobs(client: TestClient, auth, register_model):
    register_model("shapes")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert metric(r.text, "headwise_jobs", status="succeeded") == 1
    assert metric(r.text, "headwise_metrics_database_up") == 1
    assert len(r.headers["x-request-id"]) == 32


def test_latest_version_resolution_is_cached_briefly(client: TestClient, auth, register_model, monkeypatch):
    import service.serving.predictor_cache as pc

    register_model("shapes")
    files = [("files", ("a", png_bytes()))]
    assert client.post("/v1/models/shapes/predict", headers=auth, files=files).json()["model"]["version"] == 1
    register_model("shapes")
    assert client.post("/v1/models/shapes/predict", headers=auth, files=files).json()["model"]["version"] == 1
    assert client.post("/v1/models/shapes/predict?version=2", headers=auth, files=files).json()["model"]["version"] == 2
    monkeypatch.setattr(pc, "RESOLVE_TTL", 0.0)
    for entry in list(client.app.state.predictors._resolved):
        client.app.state.predictors._resolved[entry] = (0.0, None)  # expire now
    assert client.post("/v1/models/shapes/predict", headers=auth, files=files).json()["model"]["version"] == 2


def test_key_check_skips_the_database_only_while_cached_and_revocation_still_works(client: TestClient, make_key,
                                                                                    register_model):
    from tests.api.conftest import ADMIN_KEY, bearer

    register_model("shapes")
    files = [("files", ("a", png_bytes()))]
    authenticator = client.app.state.authenticator
    key = make_key(["predict"])
    assert authenticator.cached(key) is None  # never seen: the first check reads the database
    assert client.post("/v1/models/shapes/predict", headers=bearer(key), files=files).status_code == 200
    principal = authenticator.cached(key)
    assert principal is not None and principal.has("predict") and principal.team == "alpha"
    assert authenticator.cached(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # a different key
    reader = make_key(["models:read"])
    r = client.post("/v1/models/shapes/predict", headers=bearer(reader), files=files)
    assert r.status_code == 403 and "'predict'" in r.json()["detail"]
    r = client.post("/v1/models/shapes/predict", headers=bearer(reader), files=files)  # cached path: same answer
    assert r.status_code == 403 and "'predict'" in r.json()["detail"]
    key_id = principal.key_id
    assert client.delete(f"/v1/keys/{key_id}", headers=bearer(ADMIN_KEY)).status_code == 200
    assert authenticator.cached(key) is None
    r = client.post("/v1/models/shapes/predict", headers=bearer(key), files=files)
    assert r.status_code == 401
    assert client.post("/v1/models/shapes/predict", files=files).status_code == 401
