"""GET /v1/jobs/{id}/events (SSE) and GET /v1/jobs/{id}/plots/curves.png against the app on SQLite.

Job rows are written straight to the database, the way the worker writes them, so the stream is tested
against the row being the truth: replay of stored history, live updates, Last-Event-ID, the final event."""

from __future__ import annotations

import threading
import time

import pytest

from service.api import events as events_api
from service.client import iter_sse
from service.db.tables import Job
from tests.ui.conftest import AUTH
from tests.ui.helpers import decode_png, history

SPEC = {"tasks": [{"name": "category", "type": "multiclass"}], "training": {"epochs": 4},
        "weighting": {"strategy": "uncertainty"}}


def add_job(app, status: str, hist: list[dict], team: str = "default", **extra) -> str:
    with app.state.sessionmaker() as session:
        job = Job(team=team, model_name="m", spec=SPEC, status=status, history=hist,
                  progress={"epoch": len(hist), "epochs": 4, "fraction": len(hist) / 4}, **extra)
        session.add(job)
        session.commit()
        return job.id


def update_job(app, job_id: str, **values) -> None:
    with app.state.sessionmaker() as session:
        job = session.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)
        session.commit()


def read_events(client, job_id: str, **headers) -> list:
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**AUTH, **headers}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        return list(iter_sse(response.iter_lines()))


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch) -> None:
    monkeypatch.setattr(events_api, "POLL_SECONDS", 0.05)


def test_finished_job_replays_history_then_final_status(app, client) -> None:
    job_id = add_job(app, "succeeded", history(3, tasks=("category",)), metrics={"category": {"accuracy": 0.9}})
    evs = read_events(client, job_id)
    assert [(e.event, e.id) for e in evs] == [("epoch", "1"), ("epoch", "2"), ("epoch", "3"), ("status", None)]
    first = evs[0].data
    assert first["epoch"] == 1 and first["epochs"] == 4
    assert first["train"]["category"]["loss"] == pytest.approx(1.0)
    assert first["val"]["category"]["accuracy"] == pytest.approx(0.6)
    assert first["labelled"] == {"category": {"train": 80, "val": 20}}
    assert first["weights"] == {"category": 1.0}
    assert first["images_per_second"] == 200.0
    assert first["eta_seconds"] == pytest.approx(3 * 0.5)
    assert evs[2].data["eta_seconds"] == pytest.approx(0.5)
    final = evs[-1].data
    assert final["status"] == "succeeded" and final["metrics"] == {"category": {"accuracy": 0.9}}
    assert final["progress"]["epochs"] == 4


def test_last_event_id_resumes_after_that_epoch(app, client) -> None:
    job_id = add_job(app, "failed", history(3, tasks=("category",)), error="boom")
    evs = read_events(client, job_id, **{"Last-Event-ID": "2"})
    assert [(e.event, e.id) for e in evs] == [("epoch", "3"), ("status", None)]
    assert evs[-1].data["status"] == "failed" and evs[-1].data["error"] == "boom"
    evs = read_events(client, job_id, **{"Last-Event-ID": "garbage"})  # unparsable -> from the start
    assert [e.id for e in evs if e.event == "epoch"] == ["1", "2", "3"]


def test_live_job_streams_new_epochs_and_ends_when_terminal(app, client) -> None:
    """The job advances only after the stream has shown its previous state (no race with the poll interval
    on a busy machine): queued -> running with epoch 1 -> epochs 2 and 3 in one write -> succeeded with 4."""
    hist = history(4, tasks=("category", "size"))
    job_id = add_job(app, "queued", [])
    health_latency: list[float] = []
    seen = {name: threading.Event() for name in ("queued", "epoch1", "epoch3")}
    failed: list[BaseException] = []

    def worker() -> None:
        try:
            assert seen["queued"].wait(30)
            update_job(app, job_id, status="running", history=hist[:1])
            assert seen["epoch1"].wait(30)
            t0 = time.monotonic()  # the stream's polling must not block the event loop
            assert client.get("/health").status_code == 200
            health_latency.append(time.monotonic() - t0)
            update_job(app, job_id, history=hist[:3])  # two epochs land in one progress write
            assert seen["epoch3"].wait(30)
            update_job(app, job_id, status="succeeded", history=hist)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failed.append(exc)
            update_job(app, job_id, status="failed", error="test worker failed")

    thread = threading.Thread(target=worker)
    thread.start()
    evs = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=AUTH) as response:
        assert response.status_code == 200
        for ev in iter_sse(response.iter_lines()):
            evs.append(ev)
            if ev.event == "status" and ev.data["status"] == "queued":
                seen["queued"].set()
            elif ev.event == "epoch" and ev.id in ("1", "3"):
                seen[f"epoch{ev.id}"].set()
    thread.join()
    assert not failed, failed
    kinds = [(e.event, e.id, e.data.get("status") if e.event == "status" else e.data["epoch"]) for e in evs]
    assert kinds == [
        ("status", None, "queued"), ("status", None, "running"),
        ("epoch", "1", 1), ("epoch", "2", 2), ("epoch", "3", 3), ("epoch", "4", 4),
        ("status", None, "succeeded"),
    ]
    assert health_latency and health_latency[0] < 1.0


def test_keepalive_comment_while_idle(app, client, monkeypatch) -> None:
    """The job is cancelled only once the stream has sent a keep-alive (a timer raced the stream's start on a busy
    machine: the job was cancelled before the first poll)."""
    monkeypatch.setattr(events_api, "KEEPALIVE_SECONDS", 0.1)
    job_id = add_job(app, "running", [])
    lines: list[str] = []
    fallback = threading.Timer(30, update_job, args=(app, job_id), kwargs={"status": "cancelled"})
    fallback.start()  # ends the stream (and the test, failing below) if no keep-alive ever comes
    try:
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=AUTH) as response:
            for line in response.iter_lines():
                lines.append(line)
                if line.startswith(": keep-alive") and lines.count(line) == 1:
                    update_job(app, job_id, status="cancelled")
    finally:
        fallback.cancel()
    body = "\n".join(lines)
    assert ": keep-alive" in body
    assert '"status":"running"' in body.split(": keep-alive")[0]  # the state first, then the keep-alive
    assert body.rstrip().endswith('"model":null}') and '"status":"cancelled"' in body


def test_events_auth_and_team_isolation(app, client) -> None:
    other = add_job(app, "succeeded", [], team="other-team")
    assert client.get(f"/v1/jobs/{other}/events").status_code == 401
    r = client.get(f"/v1/jobs/{other}/events", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    assert client.get("/v1/jobs/nope/events", headers=AUTH).status_code == 404


def test_curves_png(app, client) -> None:
    job_id = add_job(app, "running", history(3, tasks=("category", "size"), learned=True))
    r = client.get(f"/v1/jobs/{job_id}/plots/curves.png", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    decode_png(r.content, min_size=(600, 300))
    empty = add_job(app, "queued", [])
    r = client.get(f"/v1/jobs/{empty}/plots/curves.png", headers=AUTH)
    assert r.status_code == 200
    decode_png(r.content, min_size=(300, 100))
    assert client.get(f"/v1/jobs/{job_id}/plots/curves.png").status_code == 401
    r = client.get("/v1/jobs/nope/plots/curves.png", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"


def test_version_plot_errors(client) -> None:
    r = client.get("/v1/models/none/versions/1/plots/size.png", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    assert client.get("/v1/models/none/versions/0/plots/size.png", headers=AUTH).status_code == 422
