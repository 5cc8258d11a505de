"""service.client against a scripted transport: every method hits the contract's path, errors become typed
exceptions carrying the server's kind and detail, and the SSE parser handles the stream format."""

from __future__ import annotations

import json

import httpx
import pytest

from service import client as hc
from service.client import Client, iter_sse


class Recorder:
    def __init__(self, routes: dict[tuple[str, str], httpx.Response | None] | None = None):
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        return answer if answer is not None else httpx.Response(200, json={"ok": True, "items": []})


def make(routes=None) -> tuple[Client, Recorder]:
    rec = Recorder(routes)
    return Client("http://hw.test/", "hw_key", timeout=5, transport=httpx.MockTransport(rec)), rec


def test_every_method_hits_the_contract_path(tmp_path) -> None:
    c, rec = make()
    ds = tmp_path / "d.zip"
    ds.write_bytes(b"PK")
    img = tmp_path / "a.png"
    img.write_bytes(b"\x89PNG")
    c.health()
    c.ready()
    c.upload_dataset(ds, name="n")
    c.list_datasets()
    c.get_dataset("d1")
    c.delete_dataset("d1")
    c.audit("d1", {"tasks": []})
    c.create_job("d1", "m", {"tasks": []})
    c.list_jobs()
    c.get_job("j1")
    c.cancel_job("j1")
    c.list_models()
    c.get_model("m")
    c.get_version("m", 2)
    c.download_artifact("m", 2, tmp_path / "a.zip")
    c.predict("m", [img, b"raw-bytes"], version=3)
    c.predict("m", img, as_json=True)
    c.job_curves_png("j1")
    c.task_plot_png("m", 2, "size")
    seen = [(r.method, r.url.path) for r in rec.requests]
    assert seen == [
        ("GET", "/health"), ("GET", "/ready"),
        ("POST", "/v1/datasets"), ("GET", "/v1/datasets"), ("GET", "/v1/datasets/d1"), ("DELETE", "/v1/datasets/d1"),
        ("POST", "/v1/datasets/d1/audit"),
        ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/j1"), ("POST", "/v1/jobs/j1/cancel"),
        ("GET", "/v1/models"), ("GET", "/v1/models/m"), ("GET", "/v1/models/m/versions/2"),
        ("GET", "/v1/models/m/versions/2/artifact"),
        ("POST", "/v1/models/m/predict"), ("POST", "/v1/models/m/predict"),
        ("GET", "/v1/jobs/j1/plots/curves.png"), ("GET", "/v1/models/m/versions/2/plots/size.png"),
    ]
    assert all(r.headers["authorization"] == "Bearer hw_key" for r in rec.requests)
    assert json.loads(rec.requests[7].content) == {"dataset_id": "d1", "model_name": "m", "spec": {"tasks": []}}
    multipart = rec.requests[15]
    assert multipart.url.params["version"] == "3"
    assert multipart.content.count(b'name="files"') == 2 and b"raw-bytes" in multipart.content
    assert json.loads(rec.requests[16].content) == {"images": ["iVBORw=="]}
    assert (tmp_path / "a.zip").exists()


def test_list_methods_accept_items_or_bare_lists() -> None:
    c, _ = make({("GET", "/v1/jobs"): httpx.Response(200, json={"items": [{"id": "a"}], "total": 1}),
                 ("GET", "/v1/datasets"): httpx.Response(200, json=[{"id": "b"}])})
    assert c.list_jobs() == [{"id": "a"}]
    assert c.list_datasets() == [{"id": "b"}]


@pytest.mark.parametrize(("status", "cls"), [
    (401, hc.Unauthorized), (403, hc.Forbidden), (404, hc.NotFound), (409, hc.Conflict), (413, hc.TooLarge),
    (415, hc.Invalid), (422, hc.Invalid), (503, hc.Unavailable), (500, hc.HeadwiseError),
])
def test_errors_are_typed(status: int, cls: type) -> None:
    body = {"error": "SomeKind", "detail": "what and where"}
    c, _ = make({("GET", "/v1/jobs/x"): httpx.Response(status, json=body)})
    with pytest.raises(cls) as info:
        c.get_job("x")
    err = info.value
    assert isinstance(err, hc.HeadwiseError)
    assert (err.status, err.kind, err.detail) == (status, "SomeKind", "what and where")
    assert "SomeKind" in str(err) and str(status) in str(err)


def test_non_json_error_body() -> None:
    c, _ = make({("GET", "/health"): httpx.Response(502, text="bad gateway")})
    with pytest.raises(hc.HeadwiseError) as info:
        c.health()
    assert info.value.status == 502 and info.value.detail == "bad gateway"


def test_connection_error_is_unavailable() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    c = Client("http://hw.test", "k", transport=httpx.MockTransport(boom))
    with pytest.raises(hc.Unavailable):
        c.health()


def test_wait_for_job_polls_until_terminal(monkeypatch) -> None:
    states = iter(["queued", "running", "succeeded"])
    c, _ = make()
    monkeypatch.setattr(c, "get_job", lambda job_id: {"id": job_id, "status": next(states)})
    assert c.wait_for_job("j", timeout=5, interval=0)["status"] == "succeeded"
    monkeypatch.setattr(c, "get_job", lambda job_id: {"id": job_id, "status": "running"})
    with pytest.raises(hc.JobTimeout):
        c.wait_for_job("j", timeout=0, interval=0)


def test_sse_parser() -> None:
    lines = [": keep-alive", "", "event: status", 'data: {"status": "running"}', "",
             "id: 1", "event: epoch", 'data: {"epoch": 1,', 'data:  "x": 2}', "", "data: plain", ""]
    events = list(iter_sse(iter(lines)))
    assert [(e.event, e.id) for e in events] == [("status", None), ("epoch", "1"), ("message", None)]
    assert events[1].data == {"epoch": 1, "x": 2}
    assert events[2].data == "plain"


def test_job_events_sends_last_event_id_and_parses() -> None:
    stream = 'id: 3\nevent: epoch\ndata: {"epoch": 3}\n\nevent: status\ndata: {"status": "succeeded"}\n\n'
    c, rec = make({("GET", "/v1/jobs/j/events"): httpx.Response(
        200, content=stream.encode(), headers={"content-type": "text/event-stream"})})
    events = list(c.job_events("j", last_event_id=2))
    assert rec.requests[0].headers["last-event-id"] == "2"
    assert [(e.event, e.data) for e in events] == [("epoch", {"epoch": 3}), ("status", {"status": "succeeded"})]


def test_job_events_error_is_typed() -> None:
    c, _ = make({("GET", "/v1/jobs/j/events"): httpx.Response(404, json={"error": "NotFound", "detail": "no"})})
    with pytest.raises(hc.NotFound):
        list(c.job_events("j"))
