"""Jobs: spec validated against the dataset, row committed before enqueue, enqueue failure, list/get, cancel."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.db.base import session_scope
from service.db.tables import Job
from tests.api.conftest import tiny_spec


def _create(client, auth, dataset_id, spec=None, model_name="shapes"):
    return client.post("/v1/jobs", headers=auth,
                       json={"dataset_id": dataset_id, "model_name": model_name, "spec": spec or tiny_spec()})


def _set(settings, job_id, **values) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)


def test_create_commits_then_enqueues(client: TestClient, auth, dataset_id, enqueued) -> None:
    r = _create(client, auth, dataset_id)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["model_name"] == "shapes" and body["dataset_id"] == dataset_id
    assert body["progress"] == {"epoch": 0, "epochs": 1, "fraction": 0.0}
    assert body["history"] == [] and body["model"] is None and body["created_at"].endswith("Z")
    assert body["spec"]["tasks"][1]["classes"] is None  # the stored spec is the resolved, fully defaulted one
    assert body["spec"]["training"]["optimizer"] == "adamw"
    assert enqueued.job_ids == [body["id"]] and enqueued.seen_committed == [True]


def test_auto_epochs_queued_job_reads(client: TestClient, auth, dataset_id, enqueued) -> None:
    spec = tiny_spec()
    spec["training"]["epochs"] = "auto"  # planned by the worker when training starts
    r = _create(client, auth, dataset_id, spec=spec)
    assert r.status_code == 202, r.text
    assert r.json()["progress"] == {"epoch": 0, "epochs": None, "fraction": 0.0}
    listed = client.get("/v1/jobs", headers=auth)
    assert listed.status_code == 200, listed.text
    got = client.get(f"/v1/jobs/{r.json()['id']}", headers=auth)
    assert got.status_code == 200 and got.json()["progress"]["epochs"] is None, got.text


def test_classes_inferred_from_data(client: TestClient, auth, dataset_id) -> None:
    spec = tiny_spec()
    del spec["tasks"][0]["classes"]
    spec["tasks"][2]["gate"]["classes"] = ["circle", "square"]
    body = _create(client, auth, dataset_id, spec).json()
    assert body["spec"]["tasks"][0]["classes"] == ["circle", "none", "square"]


@pytest.mark.parametrize(
    ("mutate", "kind", "needle"),
    [
        (lambda s: s["tasks"][1].update(name="is_bigg"), "SpecError", "tasks[1].name"),
        (lambda s: (s["tasks"][0].update(classes=["none", "circle"]), s["tasks"][2].pop("gate")), "SpecError",
         "tasks[0].classes: class 'square' in the data"),
        (lambda s: s["tasks"][2]["gate"].update(task="nope"), "SpecError", "tasks[2].gate"),
        (lambda s: s["tasks"][0].update(loss="mse"), "SpecError", "tasks[0].loss"),
        (lambda s: s.update(bogus=1), "SpecError", "bogus"),
        (lambda s: s.update(tasks=[]), "SpecError", "tasks"),
    ],
)
def test_invalid_spec_422(client: TestClient, auth, dataset_id, enqueued, settings, mutate, kind, needle) -> None:
    spec = tiny_spec()
    mutate(spec)
    r = _create(client, auth, dataset_id, spec)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == kind and needle in r.json()["detail"], r.json()
    assert enqueued.job_ids == []
    with session_scope(settings.DATABASE_URL) as s:
        assert s.query(Job).count() == 0


def test_unknown_dataset_and_bad_model_name(client: TestClient, auth, dataset_id) -> None:
    r = _create(client, auth, "missing")
    assert r.status_code == 404 and "dataset_id" in r.json()["detail"]
    r = _create(client, auth, dataset_id, model_name="../etc")
    assert r.status_code == 422 and "body.model_name" in r.json()["detail"]


def test_enqueue_failure_marks_job_failed_503(client: TestClient, auth, dataset_id, enqueued) -> None:
    enqueued.fail = True
    r = _create(client, auth, dataset_id)
    assert r.status_code == 503 and r.json()["error"] == "ServiceUnavailable"
    jobs = client.get("/v1/jobs", headers=auth).json()["items"]
    assert len(jobs) == 1 and jobs[0]["status"] == "failed" and "enqueue" in jobs[0]["error"]
    assert enqueued.seen_committed == [True]


def test_list_filter_and_get(client: TestClient, auth, dataset_id, settings, register_model) -> None:
    ids = [_create(client, auth, dataset_id).json()["id"] for _ in range(3)]
    _set(settings, ids[0], status="running", progress={"epoch": 1, "epochs": 4, "fraction": 0.25})
    listed = client.get("/v1/jobs", headers=auth).json()
    assert listed["total"] == 3 and [j["id"] for j in listed["items"]] == ids[::-1]
    running = client.get("/v1/jobs?status=running", headers=auth).json()
    assert [j["id"] for j in running["items"]] == [ids[0]]
    assert running["items"][0]["progress"] == {"epoch": 1, "epochs": 4, "fraction": 0.25}
    page = client.get("/v1/jobs?limit=1&offset=1", headers=auth).json()
    assert [j["id"] for j in page["items"]] == [ids[1]]
    job_id, _ = register_model("shapes")
    got = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert got["status"] == "succeeded" and got["model"] == {"name": "shapes", "version": 1}
    assert client.get("/v1/jobs/nope", headers=auth).status_code == 404


def test_cancel_queued(client: TestClient, auth, dataset_id) -> None:
    job = _create(client, auth, dataset_id).json()["id"]
    r = client.post(f"/v1/jobs/{job}/cancel", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] and r.json()["cancel_requested"]
    r = client.post(f"/v1/jobs/{job}/cancel", headers=auth)
    assert r.status_code == 409 and r.json()["error"] == "Conflict"


def test_cancel_running_requests_stop(client: TestClient, auth, dataset_id, settings) -> None:
    job = _create(client, auth, dataset_id).json()["id"]
    _set(settings, job, status="running")
    r = client.post(f"/v1/jobs/{job}/cancel", headers=auth)
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert client.post(f"/v1/jobs/{job}/cancel", headers=auth).status_code == 202  # idempotent


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_409(client: TestClient, auth, dataset_id, settings, status) -> None:
    job = _create(client, auth, dataset_id).json()["id"]
    _set(settings, job, status=status)
    r = client.post(f"/v1/jobs/{job}/cancel", headers=auth)
    assert r.status_code == 409 and status in r.json()["detail"]
