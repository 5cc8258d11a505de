"""End to end with PostgreSQL + Redis: `headwise migrate`, `headwise api` (uvicorn) and `headwise worker` (a real
Celery worker) as subprocesses, driven only through the REST contract (issue 3) and the CLI.

Each run gets a fresh PostgreSQL database and an unused Redis database number, both removed afterwards. The
processes are shared by the module; the data is not: every test gets what it needs from fixtures (the trained
model is a read-only module fixture; a test that deletes or cancels makes its own dataset), so each test passes
alone and in any order. Every answer is checked against the one shape and status the contract gives.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    claim_redis_db,
    create_database,
    drop_database,
    postgres_error,
    redis_error,
    release_redis_db,
    unavailable,
)
from tests.e2e.harness import (
    KEY_RE,
    TASKS,
    LogBook,
    Proc,
    base_env,
    check_prediction,
    expect,
    expect_error,
    free_port,
    headwise_cmd,
    make_dataset,
    multipart_files,
    poll_job,
    run_cli,
    sample_images,
    tiny_spec,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.slow

MODEL = "e2e-shapes"
CONTRACT_PATHS = (  # issue 3, path parameters written as {}
    "/health",
    "/ready",
    "/v1/datasets",
    "/v1/datasets/{}",
    "/v1/datasets/{}/audit",
    "/v1/jobs",
    "/v1/jobs/{}",
    "/v1/jobs/{}/cancel",
    "/v1/models",
    "/v1/models/{}",
    "/v1/models/{}/versions/{}",
    "/v1/models/{}/versions/{}/artifact",
    "/v1/models/{}/predict",
)
N_SAMPLES = 96


class Stack(LogBook):
    """The running processes."""

    def __init__(self) -> None:
        super().__init__()
        self.base_url = ""
        self.admin_key = ""
        self.env: dict[str, str] = {}
        self.api: Proc | None = None
        self.worker: Proc | None = None
        self.client: httpx.Client | None = None
        self.dataset_file: Path | None = None

    @property
    def procs(self) -> list[Proc]:
        return [p for p in (self.api, self.worker) if p is not None]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for error in (postgres_error(), redis_error()):
        if error:
            unavailable(error)
    tmp = tmp_path_factory.mktemp("e2e-pg")
    db_name, db_url = create_database("headwise_e2e")
    token = secrets.token_hex(8)
    redis_db = claim_redis_db(token)
    s = Stack()
    try:
        port = free_port()
        s.base_url = f"http://127.0.0.1:{port}"
        s.admin_key = "e2e-admin-" + secrets.token_urlsafe(24)
        data_dir = tmp / "data"
        data_dir.mkdir()
        s.env = base_env(
            HEADWISE_DATABASE_URL=db_url,
            HEADWISE_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
            HEADWISE_DATA_DIR=str(data_dir),
            HEADWISE_ADMIN_KEY=s.admin_key,
            HEADWISE_SECRET=secrets.token_hex(32),
            HEADWISE_HOST="127.0.0.1",
            HEADWISE_PORT=str(port),
        )
        migrate = run_cli(["migrate"], s.env, s, "migrate")
        assert migrate.returncode == 0, f"headwise migrate failed:\n{migrate.stdout}\n{migrate.stderr}"

        s.api = Proc("api", headwise_cmd("api"), s.env, s.add("api", tmp / "api.log"))
        s.worker = Proc(
            "worker",
            headwise_cmd("worker", "--queues", "gpu", "--concurrency", "1"),
            s.env,
            s.add("worker", tmp / "worker.log"),
        )
        wait_healthy(s.base_url, s.api)
        s.client = httpx.Client(
            base_url=s.base_url, headers={"Authorization": f"Bearer {s.admin_key}"}, timeout=60
        )
        s.dataset_file = make_dataset(tmp / "dataset", n=N_SAMPLES)
        yield s
    finally:
        if s.client is not None:
            s.client.close()
        for proc in reversed(s.procs):
            proc.stop()
        release_redis_db(redis_db, token)
        drop_database(db_name)


# ---------------------------------------------------------------------------------------- helpers


def upload(s: Stack, name: str = "shapes") -> dict[str, Any]:
    assert s.client is not None and s.dataset_file is not None
    with open(s.dataset_file, "rb") as fh:
        resp = s.client.post(
            "/v1/datasets", files={"file": (s.dataset_file.name, fh, "application/zip")}, data={"name": name}
        )
    return expect(resp, 201)


@pytest.fixture(scope="module")
def shared_dataset(stack: Stack) -> dict[str, Any]:
    """An uploaded dataset that no test modifies."""
    return upload(stack)


@pytest.fixture(scope="module")
def trained(stack: Stack, shared_dataset: dict[str, Any]) -> dict[str, Any]:
    """A job trained to success on the shared dataset (model MODEL version 1), read-only for the tests."""
    body = {"dataset_id": shared_dataset["id"], "model_name": MODEL, "spec": tiny_spec(epochs=3)}
    created = expect(stack.client.post("/v1/jobs", json=body), 202)
    job = poll_job(stack.client, created["id"], ["succeeded"], procs=stack.procs)
    return {"created": created, "job": job, "dataset": shared_dataset}


# ------------------------------------------------------------------------------------------ tests


def test_health_ready_and_auth(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/health", timeout=10).status_code == 200
    resp = httpx.get(f"{stack.base_url}/ready", timeout=30)
    assert resp.status_code == 200, f"/ready with PostgreSQL and Redis up: {resp.status_code} {resp.text}"
    expect_error(httpx.get(f"{stack.base_url}/v1/datasets", timeout=10), 401)
    bad = {"Authorization": "Bearer hw_0000000000_" + "x" * 43}
    expect_error(httpx.get(f"{stack.base_url}/v1/datasets", headers=bad, timeout=10), 401)
    assert httpx.get(f"{stack.base_url}/docs", timeout=10).status_code == 200
    paths = {
        re.sub(r"\{[^}]*\}", "{}", p)
        for p in httpx.get(f"{stack.base_url}/openapi.json", timeout=10).json()["paths"]
    }
    for path in CONTRACT_PATHS:
        assert path in paths, f"{path} missing from the OpenAPI paths: {sorted(paths)}"


def test_upload_dataset(stack: Stack) -> None:
    ds = upload(stack, name="upload-test")
    assert ds["format"] == "zip" and ds["num_samples"] == N_SAMPLES and ds["name"] == "upload-test", ds
    assert ds["id"] and ds["created_at"], ds
    kinds = {col: info["kind"] for col, info in ds["columns"].items()}
    assert kinds == {"category": "categorical", "is_big": "binary", "size": "numeric", "hue": "numeric"}, (
        kinds
    )
    assert set(ds["columns"]["category"]["values"]) == {"none", "circle", "square"}, ds["columns"]
    assert 0 < ds["columns"]["hue"]["labelled"] < N_SAMPLES, "hue is sparsely labelled in the example"

    listed = expect(stack.client.get("/v1/datasets"), 200)
    assert ds["id"] in {d["id"] for d in listed["items"]} and listed["total"] == len(listed["items"])
    got = expect(stack.client.get(f"/v1/datasets/{ds['id']}"), 200)
    assert got["id"] == ds["id"] and got["num_samples"] == N_SAMPLES
    expect_error(stack.client.get("/v1/datasets/" + "0" * 32), 404)


def test_upload_rejects_garbage(stack: Stack) -> None:
    resp = stack.client.post(
        "/v1/datasets", files={"file": ("broken.zip", b"not a zip at all", "application/zip")}
    )
    assert "not a valid zip" in expect_error(resp, 422, "DataError")["detail"]


def test_audit(stack: Stack, shared_dataset: dict[str, Any]) -> None:
    body = expect(stack.client.post(f"/v1/datasets/{shared_dataset['id']}/audit", json={"spec": tiny_spec()}), 200)
    assert body["spec_errors"] == [], body
    audit = body["audit"]
    assert set(audit["tasks"]) == set(TASKS), body
    assert audit["tasks"]["size"]["gate_violations"] == 0, body


def test_job_spec_validated_against_dataset(stack: Stack, shared_dataset: dict[str, Any]) -> None:
    spec = tiny_spec()
    spec["tasks"][0]["name"] = "categry"
    spec["tasks"][2]["gate"]["task"] = "categry"
    resp = stack.client.post(
        "/v1/jobs", json={"dataset_id": shared_dataset["id"], "model_name": MODEL, "spec": spec}
    )
    body = expect_error(resp, 422)
    assert "categry" in body["detail"], body

    spec = tiny_spec()
    spec["tasks"][0]["classes"] = ["none", "circle"]  # the data also has "square"
    resp = stack.client.post(
        "/v1/jobs", json={"dataset_id": shared_dataset["id"], "model_name": MODEL, "spec": spec}
    )
    expect_error(resp, 422)

    resp = stack.client.post(
        "/v1/jobs", json={"dataset_id": "0" * 32, "model_name": MODEL, "spec": tiny_spec()}
    )
    assert "dataset_id" in expect_error(resp, 404, "NotFound")["detail"]


def test_training_job_succeeds(stack: Stack, trained: dict[str, Any]) -> None:
    job, created = trained["job"], trained["created"]
    assert created["status"] == "queued" and created["id"] == job["id"], created
    assert job["progress"] == {"epoch": 3, "epochs": 3, "fraction": 1.0}, job["progress"]
    assert len(job["history"]) == 3, job["history"]
    for i, epoch in enumerate(job["history"], start=1):
        assert epoch["epoch"] == i, epoch
        assert all(f'"{t}"' in json.dumps(epoch) for t in TASKS), (
            f"history entry lacks per-head values: {epoch}"
        )
    assert job["metrics"], job
    assert job["model"] == {"name": MODEL, "version": 1}, job["model"]
    assert job["started_at"] and job["finished_at"] and job["created_at"], job
    assert job["error"] is None and job["status"] == "succeeded" and job["dataset_id"] == trained["dataset"]["id"]

    listed = expect(stack.client.get("/v1/jobs", params={"status": "succeeded"}), 200)["items"]
    assert job["id"] in {j["id"] for j in listed} and {j["status"] for j in listed} == {"succeeded"}


def test_model_registry_and_artifact(stack: Stack, trained: dict[str, Any]) -> None:
    job = trained["job"]
    models = expect(stack.client.get("/v1/models"), 200)["items"]
    [entry] = [m for m in models if m["name"] == MODEL]
    assert entry["latest_version"] == 1 and entry["latest"]["version"] == 1, entry

    model = expect(stack.client.get(f"/v1/models/{MODEL}"), 200)
    assert [v["version"] for v in model["versions"]] == [1], model
    v1 = model["versions"][0]
    assert v1["metrics"] == job["metrics"] and v1["spec"]["tasks"], v1
    assert (v1["job_id"], v1["dataset_id"]) == (job["id"], trained["dataset"]["id"]), v1
    got = expect(stack.client.get(f"/v1/models/{MODEL}/versions/1"), 200)
    assert got == v1, (got, v1)
    expect_error(stack.client.get(f"/v1/models/{MODEL}/versions/99"), 404)
    expect_error(stack.client.get("/v1/models/no-such-model"), 404)

    resp = stack.client.get(f"/v1/models/{MODEL}/versions/1/artifact")
    assert resp.status_code == 200, f"artifact: {resp.status_code} {resp.text[:500]}"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        files = {Path(n).name: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    assert {"model.safetensors", "spec.json", "meta.json", "checksums.json"} <= set(files), sorted(files)
    checksums = json.loads(files["checksums.json"])
    for name, digest in checksums.items():
        assert hashlib.sha256(files[Path(name).name]).hexdigest() == digest, f"checksum mismatch for {name}"


def test_predict_multipart_and_base64(stack: Stack, trained: dict[str, Any]) -> None:
    images = sample_images(stack.dataset_file, 3)
    resp = stack.client.post(f"/v1/models/{MODEL}/predict", files=multipart_files(images))
    multi = expect(resp, 200)
    assert multi["model"] == {"name": MODEL, "version": 1}, multi
    assert len(multi["predictions"]) == 3, multi
    for pred in multi["predictions"]:
        check_prediction(pred)

    payload = {"images": [base64.b64encode(data).decode() for _, data in images]}
    b64 = expect(stack.client.post(f"/v1/models/{MODEL}/predict", params={"version": 1}, json=payload), 200)
    assert b64["model"] == {"name": MODEL, "version": 1}, b64
    assert len(b64["predictions"]) == 3
    for a, b in zip(multi["predictions"], b64["predictions"], strict=True):
        assert a["category"]["label"] == b["category"]["label"], (a, b)
        for cls, p in a["category"]["probabilities"].items():
            assert abs(p - b["category"]["probabilities"][cls]) < 1e-4, (a, b)
        assert a["size"].get("gated") == b["size"].get("gated"), (a, b)

    # input order is kept: reversed input -> reversed output
    rev = expect(
        stack.client.post(f"/v1/models/{MODEL}/predict", json={"images": payload["images"][::-1]}), 200
    )
    for x, y in zip(rev["predictions"], b64["predictions"][::-1], strict=True):
        for cls, p in x["category"]["probabilities"].items():
            assert abs(p - y["category"]["probabilities"][cls]) < 1e-4, ("order not kept", x, y)

    expect_error(stack.client.post(f"/v1/models/{MODEL}/predict", params={"version": 99}, json=payload), 404)
    expect_error(stack.client.post("/v1/models/no-such-model/predict", json=payload), 404)
    resp = stack.client.post(f"/v1/models/{MODEL}/predict", json={"images": ["!!not base64!!"]})
    assert expect_error(resp, 422, "ValidationError")["detail"] == "images[0]: not valid base64"


def test_keys_cli_and_scopes(stack: Stack, shared_dataset: dict[str, Any]) -> None:
    created = run_cli(
        ["keys", "create", "--name", "e2e-reader", "--scopes", "models:read"], stack.env, stack, "keys-create"
    )
    assert created.returncode == 0, created.stderr
    match = KEY_RE.search(created.stdout)
    assert match, f"no hw_... key printed: {created.stdout!r}"
    reader = httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {match.group(0)}"}, timeout=30
    )
    with reader:
        expect(reader.get("/v1/models"), 200)
        resp = reader.post(
            "/v1/jobs", json={"dataset_id": shared_dataset["id"], "model_name": MODEL, "spec": tiny_spec()}
        )
        expect_error(resp, 403)
    listed = run_cli(["keys", "list"], stack.env, stack, "keys-list")
    assert listed.returncode == 0 and "e2e-reader" in listed.stdout, listed.stdout + listed.stderr
    assert match.group(0) not in listed.stdout, "the full key must be shown only once, at creation"


def test_cancel_and_dataset_delete(stack: Stack, trained: dict[str, Any]) -> None:
    ds_id = upload(stack, name="to-delete")["id"]  # its own: this test deletes it
    long_spec = tiny_spec(epochs=1000)
    job_body = {"dataset_id": ds_id, "model_name": "e2e-cancelled", "spec": long_spec}
    running = expect(stack.client.post("/v1/jobs", json=job_body), 202)
    poll_job(stack.client, running["id"], ["running"], procs=stack.procs)
    # prefetch 1 + concurrency 1: this one waits in the queue (or in the worker's single reserved slot)
    queued = expect(stack.client.post("/v1/jobs", json=job_body), 202)

    expect_error(stack.client.delete(f"/v1/datasets/{ds_id}"), 409)

    assert expect(stack.client.post(f"/v1/jobs/{queued['id']}/cancel"), 200)["status"] == "cancelled"
    requested = expect(stack.client.post(f"/v1/jobs/{running['id']}/cancel"), 202)
    assert requested["status"] == "running" and requested["cancel_requested"] is True
    stopped = poll_job(stack.client, running["id"], ["cancelled"], timeout=60, procs=stack.procs)
    assert stopped["progress"]["epoch"] < 1000 and stopped["finished_at"], stopped
    poll_job(stack.client, queued["id"], ["cancelled"], timeout=30)
    # the worker gets the queued job's message after the running one ends: it must not start it
    time.sleep(5)
    never = expect(stack.client.get(f"/v1/jobs/{queued['id']}"), 200)
    assert never["status"] == "cancelled" and not never.get("started_at"), never
    assert never["history"] == [], never
    expect_error(stack.client.get("/v1/models/e2e-cancelled"), 404)
    # cancelling a finished job is a conflict, not a state change
    done = trained["job"]["id"]
    assert "already finished" in expect_error(stack.client.post(f"/v1/jobs/{done}/cancel"), 409, "Conflict")["detail"]
    assert expect(stack.client.get(f"/v1/jobs/{done}"), 200)["status"] == "succeeded"

    assert expect(stack.client.delete(f"/v1/datasets/{ds_id}"), 204) is None
    expect_error(stack.client.get(f"/v1/datasets/{ds_id}"), 404)
    expect_error(stack.client.post("/v1/jobs", json=job_body), 404)  # the deleted dataset is gone for new jobs


def test_processes_still_up(stack: Stack) -> None:
    for proc in stack.procs:
        assert proc.alive(), f"{proc.name} exited with {proc.popen.returncode}"
    wait_until(
        "api /health after the walk-through",
        lambda: httpx.get(f"{stack.base_url}/health", timeout=5).status_code == 200,
        10,
    )
