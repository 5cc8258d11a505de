"""Prometheus metrics (HTTP, batches, jobs from the database), request ids and JSON logs."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import sessionmaker

from service.api.errors import install_error_handlers
from service.api.metrics import install
from service.config import Settings
from service.db.base import Base, make_engine
from service.db.tables import Job
from service.observability import (
    Metrics,
    bind_job,
    configure_logging,
    request_id_from,
    request_id_var,
)


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def app(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    Base.metadata.create_all(engine)
    app = FastAPI()
    app.state.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)

    @app.get("/items/{item_id}")
    def item(item_id: int):
        logging.getLogger("headwise.test").info("serving item %d", item_id)
        return {"id": item_id, "request_id": request_id_var.get()}

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    app.state.settings = Settings(DATA_DIR=tmp_path)
    install_error_handlers(app)
    install(app, app.state.settings)
    yield app
    engine.dispose()


def test_http_counts_latency_and_request_ids(app):
    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/items/3", headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42" and r.json()["request_id"] == "req-42"
    r = client.get("/items/4")
    assert len(r.headers["x-request-id"]) == 32 and r.json()["request_id"] == r.headers["x-request-id"]
    assert client.get("/items/4", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"] != \
        "bad id\twith spaces"
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/boom").status_code == 500
    text = client.get("/metrics").text
    s = samples(text)
    key = (("method", "GET"), ("route", "/items/{item_id}"), ("status", "200"))
    assert s[("headwise_http_requests_total", key)] == 3
    assert s[("headwise_http_request_duration_seconds_count", key)] == 3
    assert s[("headwise_http_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 1
    assert s[("headwise_http_requests_total", (("method", "GET"), ("route", "/boom"), ("status", "500")))] == 1
    assert s[("headwise_http_requests_in_progress", ())] == 1  # the /metrics request itself


def test_jobs_by_status_and_training_rate_from_the_database(app):
    with app.state.sessionmaker() as session:
        for status in ("queued", "queued", "running", "failed", "running"):
            history = [{"epoch": 1, "images_per_second": 100.0}, {"epoch": 2, "images_per_second": 250.5}] \
                if status == "running" else []
            session.add(Job(team="t", model_name="shapes", spec={}, status=status, history=history))
        session.commit()
        running = [j.id for j in session.query(Job).filter(Job.status == "running")]
    s = samples(TestClient(app).get("/metrics").text)
    assert s[("headwise_jobs", (("status", "queued"),))] == 2
    assert s[("headwise_jobs", (("status", "running"),))] == 2
    assert s[("headwise_jobs", (("status", "succeeded"),))] == 0
    assert s[("headwise_metrics_database_up", ())] == 1
    for job_id in running:
        assert s[("headwise_job_training_images_per_second", (("job_id", job_id), ("model", "shapes")))] == 250.5


def test_database_failure_does_not_break_the_scrape():
    def broken():
        raise ConnectionError("db down")

    m = Metrics()
    m.watch_jobs(broken)
    s = samples(m.render()[0].decode())
    assert s[("headwise_metrics_database_up", ())] == 0
    assert not any(name == "headwise_jobs" for name, _ in s)


def test_batch_metrics():
    m = Metrics()
    m.observe_batch(5, 2, [0.001, 0.003], 0.02)
    m.observe_batch(64, 64, [0.01] * 64, 0.5)
    s = samples(m.render()[0].decode())
    assert s[("headwise_predict_batch_images_count", ())] == 2
    assert s[("headwise_predict_batch_images_sum", ())] == 69
    assert s[("headwise_predict_queue_wait_seconds_count", ())] == 66
    assert s[("headwise_predict_images_total", ())] == 69
    assert s[("headwise_predict_batch_images_bucket", (("le", "8.0"),))] == 1


def test_metrics_token(app, monkeypatch):
    monkeypatch.setattr(app.state, "settings", app.state.settings.model_copy(update={"METRICS_TOKEN": "s3cret"}))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_request_id_validation():
    assert request_id_from("abc-1.2:3_x") == "abc-1.2:3_x"
    assert request_id_from("x" * 129) != "x" * 129
    assert len(request_id_from(None)) == 32


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker"):
        logging.getLogger(name).disabled = False


def test_json_logs_carry_request_and_job_ids(restore_logging):
    stream = io.StringIO()
    assert configure_logging("json", "INFO", stream=stream) == "json"
    configure_logging("json", "INFO", stream=stream)  # idempotent: still one handler of ours
    lg = logging.getLogger("headwise.test")
    token = request_id_var.set("r-1")
    lg.info("hello %s", "world", extra={"images": 3})
    request_id_var.reset(token)
    with bind_job("job-9"):
        lg.warning("training")
        try:
            raise ValueError("bad")
        except ValueError:
            lg.exception("failed")
    lg.info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [x["message"] for x in lines] == ["hello world", "training", "failed", "after"]
    assert lines[0]["request_id"] == "r-1" and lines[0]["images"] == 3 and lines[0]["level"] == "INFO"
    assert lines[1]["job_id"] == "job-9" and "request_id" not in lines[1]
    assert "ValueError: bad" in lines[2]["exc"]
    assert "job_id" not in lines[3]


def test_json_access_log_lines(app, restore_logging, monkeypatch):
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    fresh = FastAPI()
    fresh.state.sessionmaker = app.state.sessionmaker
    settings = app.state.settings.model_copy(update={"LOG_FORMAT": "json"})

    @fresh.get("/x/{n}")
    def x(n: int):
        return {}

    install(fresh, settings)
    TestClient(fresh).get("/x/1", headers={"X-Request-ID": "rid-7"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [x for x in lines if x["logger"] == "headwise.access"]
    assert access and access[0]["route"] == "/x/{n}" and access[0]["status"] == 200
    assert access[0]["request_id"] == "rid-7" and access[0]["duration_ms"] >= 0


def test_text_logs(restore_logging):
    stream = io.StringIO()
    configure_logging("text", "INFO", stream=stream)
    with bind_job("j1"):
        logging.getLogger("headwise.test").info("step")
    assert "headwise.test [job_id=j1]: step" in stream.getvalue()
    with pytest.raises(ValueError, match="json"):
        configure_logging("yaml")
