"""service.client against the real app served by uvicorn over HTTP: every REST route of the app's OpenAPI schema
(except the /v2 protocol, which has its own clients) is reached by a client method, and each method returns the
endpoint's typed model with the values the server holds. Error mapping and the SSE parser are unit-tested at the
end with scripted answers."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import httpx
import pytest

from service import client as hc
from service.api import schemas as s
from service.client import Client, iter_sse
from service.domain import JobStatus

from .conftest import ADMIN_KEY, png_bytes, tiny_spec

NOT_FOR_THE_CLIENT = re.compile(r"^/(v2|docs|redoc|openapi\.json|ui)\b")


def _routes(app) -> dict[tuple[str, re.Pattern], str]:
    routes = {}
    for path, ops in app.openapi()["paths"].items():
        if NOT_FOR_THE_CLIENT.match(path):
            continue
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", path) + "$")
        for method in ops:
            routes[(method.upper(), pattern)] = f"{method.upper()} {path}"
    return routes


def test_every_route_has_a_typed_method(app, server, make_key, register_model, example_zip: Path, tmp_path) -> None:
    seen: list[tuple[str, str]] = []
    hooks = {"request": [lambda request: seen.append((request.method, request.url.path))]}
    user = Client(server, make_key(["datasets:write", "jobs:write", "models:read", "models:write", "predict"]),
                  event_hooks=hooks)
    admin = Client(server, ADMIN_KEY, event_hooks=hooks)

    assert user.health() == s.HealthRead(status="ok")
    assert user.ready().status == "ok"
    assert "headwise_jobs" in user.metrics()
    from service.ml.capabilities import capabilities  # the engine's own answer, as the server serves it

    caps = user.capabilities()
    assert {k: v for k, v in caps.items() if k not in ("backbones", "weights")} == capabilities()
    assert [b["name"] for b in caps["backbones"]][0] == "headwise" and caps["weights"] == []

    ds = user.upload_dataset(example_zip, name="shapes")
    assert isinstance(ds, s.DatasetCreated) and ds.num_samples == 48 and ds.name == "shapes"
    assert [d.id for d in user.list_datasets()] == [ds.id]
    assert user.get_dataset(ds.id) == s.DatasetRead.model_validate(ds.model_dump())
    assert user.spec_schema()["title"] == "Spec"
    with pytest.raises(hc.Forbidden) as refused:  # no import prefix is allowed in this server's settings
        user.import_dataset("s3://bucket/shapes/")
    assert refused.value.detail.startswith("source: imports from object storage are disabled")
    with pytest.raises(hc.NotFound):
        user.get_import("0" * 32)
    audit = user.audit(ds.id, tiny_spec())
    assert isinstance(audit, s.AuditRead) and audit.spec_errors == [] and audit.audit is not None

    job = user.create_job(ds.id, "queued-one", tiny_spec())
    assert isinstance(job, s.JobRead) and job.status is JobStatus.QUEUED
    assert [j.id for j in user.list_jobs(status=JobStatus.QUEUED)] == [job.id]
    assert user.list_jobs(status="running") == []
    assert user.get_job(job.id).model_name == "queued-one"
    cancelled = user.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    with pytest.raises(hc.NotFound):  # no compare block
        user.job_comparison(job.id)
    compared = user.create_job(ds.id, "compared", tiny_spec(), compare={"weighting": ["uncertainty"]})
    assert compared.compare == {"single_task": False, "weighting": ["uncertainty"], "seeds": 1, "register": "main"}
    report = user.job_comparison(compared.id)
    assert isinstance(report, s.ComparisonRead) and (report.runs_total, report.complete) == (2, False)
    assert user.job_comparison_png(compared.id).startswith(b"\x89PNG")
    user.cancel_job(compared.id)

    job_id, _ = register_model("shapes", dataset_id=ds.id)
    register_model("shapes", dataset_id=ds.id)
    model = user.get_model("shapes")
    assert isinstance(model, s.ModelRead) and [v.version for v in model.versions] == [1, 2]
    assert [(m.name, m.latest_version) for m in user.list_models()] == [("shapes", 2)]
    assert user.get_version("shapes", 1).job_id == job_id
    updated = user.update_version("shapes", 1, description="first", tags=["a", "b"])
    assert (updated.description, updated.tags) == ("first", ["a", "b"])
    with zipfile.ZipFile(io.BytesIO(user.download_artifact("shapes", 1, tmp_path / "a.zip"))) as zf:
        assert "model.safetensors" in zf.namelist()
    with pytest.raises(hc.NotFound):
        user.download_onnx("shapes", 1)  # trained without the ONNX export

    moved = user.set_alias("shapes", "production", 1)
    assert isinstance(moved, s.AliasEventRead) and (moved.from_version, moved.to_version) == (None, 1)
    user.set_alias("shapes", "production", 2)
    assert user.get_alias("shapes", "production").version == 2
    assert [(a.alias, a.version) for a in user.list_aliases("shapes")] == [("production", 2)]
    assert user.rollback_alias("shapes", "production").to_version == 1
    assert [e.action for e in user.alias_history("shapes", "production")] == ["set", "set", "rollback"]

    image = png_bytes()
    result = user.predict("shapes", [image, image], alias="production")
    assert isinstance(result, s.PredictRead) and result.model == s.ModelRef(name="shapes", version=1)
    assert result.alias == "production" and len(result.predictions) == 2
    assert user.predict("shapes", image, version=2, as_json=True).model.version == 2
    with pytest.raises(hc.Conflict):  # registered here without the reports the worker stores
        user.task_plot_png("shapes", 1, "category")
    assert user.job_curves_png(job_id).startswith(b"\x89PNG")
    assert [e.event for e in user.job_events(job_id)] == ["status"]
    user.delete_alias("shapes", "production")
    user.delete_version("shapes", 2)
    assert [v.version for v in user.get_model("shapes").versions] == [1]

    # batch predictions and evaluations (queued here: no worker in this test)
    batch = user.create_batch_prediction("shapes", ds.id, alias=None, version=1)
    assert isinstance(batch, s.BatchPredictionRead) and batch.status is JobStatus.QUEUED
    assert [b.id for b in user.list_batch_predictions("shapes")] == [batch.id]
    assert user.get_batch_prediction("shapes", batch.id).model.version == 1
    for filename in ("results.jsonl", "results.csv"):
        with pytest.raises(hc.Conflict):
            user.download_batch_results("shapes", batch.id, tmp_path / filename, filename)
    assert user.cancel_batch_prediction("shapes", batch.id).status is JobStatus.CANCELLED
    user.set_alias("shapes", "staging", 1)
    ev = user.create_evaluation("shapes", None, ds.id, alias="staging")
    assert isinstance(ev, s.EvaluationRead) and ev.model.version == 1 and ev.heads is None
    assert [e.id for e in user.list_evaluations("shapes", 1)] == [ev.id]
    assert user.get_evaluation("shapes", 1, ev.id).status is JobStatus.QUEUED
    with pytest.raises(hc.NotFound):
        user.evaluation_plot_png("shapes", 1, ev.id, "category")
    assert user.cancel_evaluation("shapes", 1, ev.id).status is JobStatus.CANCELLED
    by_number = user.create_evaluation("shapes", 1, ds.id)
    assert by_number.model.version == 1 and user.cancel_evaluation("shapes", 1, by_number.id).status == "cancelled"

    created = admin.create_key("ci", ["predict"])
    assert isinstance(created, s.KeyCreated) and created.key.startswith("hw_") and created.scopes == ["predict"]
    assert created.id in [k.id for k in admin.list_keys()]
    assert admin.revoke_key(created.id).revoked_at is not None
    workers = admin.list_workers()
    assert isinstance(workers, s.WorkerList) and workers.items == [] and workers.alive == 0
    usage = user.usage()
    assert isinstance(usage, s.UsageRead) and usage.storage_bytes.datasets > 0 and usage.active_jobs.limit
    user.delete_dataset(ds.id)
    with pytest.raises(hc.NotFound):
        user.get_dataset(ds.id)

    missing = {name for (method, pattern), name in _routes(app).items()
               if not any(m == method and pattern.match(path) for m, path in seen)}
    assert not missing, f"routes without a client method (or not exercised here): {sorted(missing)}"


# ------------------------------------------------------------------ error mapping and SSE parsing, scripted
def scripted(status: int, **response) -> Client:
    return Client("http://hw.test", "k", transport=httpx.MockTransport(lambda r: httpx.Response(status, **response)))


@pytest.mark.parametrize(("status", "cls"), [
    (401, hc.Unauthorized), (403, hc.Forbidden), (404, hc.NotFound), (409, hc.Conflict), (413, hc.TooLarge),
    (415, hc.Invalid), (422, hc.Invalid), (503, hc.Unavailable), (500, hc.HeadwiseError),
])
def test_errors_are_typed(status: int, cls: type) -> None:
    with pytest.raises(cls) as info:
        scripted(status, json={"error": "SomeKind", "detail": "what and where"}).get_job("x")
    err = info.value
    assert isinstance(err, hc.HeadwiseError) and (err.status, err.kind, err.detail) == (status, "SomeKind", "what and where")
    assert str(err) == f"{status} SomeKind: what and where"


def test_non_json_error_body_and_connection_error() -> None:
    with pytest.raises(hc.HeadwiseError) as info:
        scripted(502, text="bad gateway").health()
    assert info.value.status == 502 and info.value.detail == "bad gateway"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(hc.Unavailable):
        Client("http://hw.test", "k", transport=httpx.MockTransport(refuse)).health()


def test_sse_parser() -> None:
    lines = [": keep-alive", "", "event: status", 'data: {"status": "running"}', "",
             "id: 1", "event: epoch", 'data: {"epoch": 1,', 'data:  "x": 2}', "", "data: plain", ""]
    events = list(iter_sse(iter(lines)))
    assert [(e.event, e.id) for e in events] == [("status", None), ("epoch", "1"), ("message", None)]
    assert events[1].data == {"epoch": 1, "x": 2} and events[2].data == "plain"
