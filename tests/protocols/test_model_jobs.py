"""Evaluation and batch prediction through real processes: `headwise api` + `headwise worker` (Celery) on PostgreSQL and Redis.
The worker trains a tiny model (once per module); then an evaluation job scores it on the labelled dataset, and a
batch prediction job predicts every image (results.jsonl / results.csv compared with /v1 predict)."""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
import zipfile

import pytest

from tests.chaos.conftest import Stack, chaos_spec
from tests.conftest import (
    REDIS_URL,
    claim_redis_db,
    create_database,
    drop_database,
    postgres_error,
    redis_error,
    release_redis_db,
    unavailable,
)
from tests.e2e.harness import expect, run_cli

pytestmark = pytest.mark.slow
N = 160
# These tests reap nothing: the worker's own database threads (presence heartbeat, reaper) run at their usual
# pace rather than the chaos tests' sub-second one. (A fork of a worker child while one of those threads holds a
# connection can break the parent's and the child's PostgreSQL sessions: reported in the notes, house's area.)
CALM = {"HEADWISE_HEARTBEAT_SECONDS": "5", "HEADWISE_REAPER_SECONDS": "10", "HEADWISE_JOB_LEASE_SECONDS": "60"}


def close(a, b) -> bool:
    """Equal structure, labels, flags and reasons; floats within 1e-6."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b and type(a) is type(b)


def wait_status(client, url: str, statuses: tuple[str, ...], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = expect(client.get(url), 200)
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, (f"{url} still {body['status']} after {timeout} s: {body}; as a job: "
                                             f"{client.get('/v1/jobs/' + body['id']).text}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """api + worker on a fresh PostgreSQL database and a free Redis db; the example dataset and a trained v1."""
    error = postgres_error() or redis_error()
    if error:
        unavailable(error)
    db_name, db_url = create_database("headwise_protocols")
    token = secrets.token_hex(8)
    number = claim_redis_db(token)
    try:
        s = Stack(tmp_path_factory.mktemp("stack"), db_url, f"{REDIS_URL.rstrip('/')}/{number}")
        s.env.update(CALM)
        try:
            s.migrate()
            s.start_api()
            s.start_worker()
            s.dataset = s.upload_example(n=N)
            job = s.create_job(s.dataset, epochs=1, model="shapes")
            wait_status(s.client, f"/v1/jobs/{job}", ("succeeded", "failed", "cancelled"))
            assert s.job(job)["status"] == "succeeded", s.job(job)
            yield s
        finally:
            s.close()
    finally:
        release_redis_db(number, token)
        drop_database(db_name)


def labels_csv(s) -> list[dict]:
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as zf:
        return list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))


def test_evaluation_scores_every_head_and_checks_labels_first(stack):
    s = stack
    base = "/v1/models/shapes/versions/1/evaluations"
    created = expect(s.client.post(base, json={"dataset_id": s.dataset}), 202)
    assert created["status"] == "queued" and created["heads"] is None
    ev = wait_status(s.client, f"{base}/{created['id']}", ("succeeded", "failed", "cancelled"))
    assert ev["status"] == "succeeded" and ev["images"] == N and ev["fraction"] == 1.0, ev
    heads, rows = ev["heads"], labels_csv(s)
    assert list(heads) == ["category", "is_big", "size", "hue"]
    labelled = {c: sum(1 for r in rows if r[c] != "") for c in ("category", "is_big", "hue")}
    gate_open = sum(1 for r in rows if r["size"] != "" and r["category"] in ("circle", "square", ""))
    assert {c: heads[c]["labelled"] for c in labelled} == labelled and heads["size"]["labelled"] == gate_open
    assert set(heads["category"]) >= {"accuracy", "macro_f1"} and set(heads["is_big"]) >= {"accuracy", "roc_auc"}
    assert set(heads["size"]) >= {"rmse", "mae", "e2e_rmse", "e2e_mae", "gate_miss_rate", "gate_false_alarm_rate"}
    # the accuracy is the model's own: recomputed from /v1 predict on every labelled image
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as zf:
        keyed = [r for r in rows if r["category"] != ""]
        predicted = []
        for i in range(0, len(keyed), 32):
            files = [("files", (r["image"], zf.read(r["image"]), "image/png")) for r in keyed[i:i + 32]]
            predicted += expect(s.client.post("/v1/models/shapes/predict?version=1", files=files), 200)["predictions"]
    right = sum(p["category"]["label"] == r["category"] for p, r in zip(predicted, keyed, strict=True))
    assert heads["category"]["accuracy"] == pytest.approx(right / len(keyed), abs=1e-12)
    png = s.client.get(ev["plots"]["category"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert [e["id"] for e in expect(s.client.get(base), 200)["items"]] == [created["id"]]
    assert s.client.get("/v1/models/shapes/versions/7/evaluations").status_code == 404
    # by alias: queued for the version the alias points at, listed under it
    expect(s.client.put("/v1/models/shapes/aliases/production", json={"version": 1}), 200)
    by_alias = expect(s.client.post("/v1/models/shapes/aliases/production/evaluations",
                                    json={"dataset_id": s.dataset}), 202)
    assert by_alias["model"] == {"name": "shapes", "version": 1}
    assert s.client.post("/v1/models/shapes/aliases/staging/evaluations", json={"dataset_id": s.dataset}).status_code == 404
    assert wait_status(s.client, f"{base}/{by_alias['id']}", ("succeeded", "failed", "cancelled"))["heads"] == heads

    # labels that do not fit the version's spec: 422 before anything is queued
    bad = io.BytesIO()
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            if n == "labels.csv":
                data = data.replace(b",circle,", b",hexagon,", 1)
            dst.writestr(n, data)
    other = expect(s.client.post("/v1/datasets", files={"file": ("bad.zip", bad.getvalue())}), 201)["id"]
    refused = s.client.post(base, json={"dataset_id": other})
    assert refused.status_code == 422 and "hexagon" in refused.json()["detail"], refused.text
    assert len(expect(s.client.get(base), 200)["items"]) == 2

    # the CLI prints the per-head table
    env = {**s.env, "HEADWISE_URL": s.base_url, "HEADWISE_API_KEY": s.admin_key}
    result = run_cli(["evaluate", "--model", "shapes", "--version", "1", "--dataset", s.dataset], env, s, "cli-eval")
    assert result.returncode == 0 and f"{N} images" in result.stdout, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("category"))
    assert f"{heads['category']['accuracy']:.4g}" in line


def test_one_call_training_with_a_warm_start_through_the_worker(stack):
    """Issue 12 through real processes: one multipart POST /v1/jobs (dataset + spec) trained by the Celery worker,
    starting from shapes v1 (training.init_from by alias); the new version records its parent."""
    s = stack
    expect(s.client.put("/v1/models/shapes/aliases/production", json={"version": 1}), 200)
    spec = chaos_spec(1)
    spec["tasks"] = [*spec["tasks"][:3], {"name": "hue_again", "type": "regression", "column": "hue"}]
    spec["training"]["init_from"] = {"model": "shapes", "alias": "production"}
    path = s.tmp / "dataset" / "example.zip"
    job = expect(s.client.post("/v1/jobs", files={"file": (path.name, path.read_bytes())},
                               data={"spec": json.dumps(spec), "model_name": "shapes-retrained",
                                     "dataset_name": "retrain"}), 202)
    assert job["status"] == "queued" and job["dataset_id"], job
    done = wait_status(s.client, f"/v1/jobs/{job['id']}", ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    assert done["model"] == {"name": "shapes-retrained", "version": 1}
    warm = done["metrics"]["warm_start"]
    assert warm["parent"] == {"model": "shapes", "version": 1} and warm["trunk_tensors"] > 0
    assert warm["heads_copied"] == ["category", "is_big", "size"] and warm["heads_new"] == {"hue_again": "new task"}
    assert expect(s.client.get("/v1/models/shapes-retrained/versions/1"), 200)["parent"] == {"name": "shapes",
                                                                                            "version": 1}
    dataset = expect(s.client.get(f"/v1/datasets/{job['dataset_id']}"), 200)
    assert dataset["name"] == "retrain" and dataset["num_samples"] == N


def big_dataset(s, copies: int) -> str:
    """The example dataset `copies` times over (members renamed, labels rows repeated): a job long enough to stop."""
    out = io.BytesIO()
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as src, zipfile.ZipFile(out, "w") as dst:
        lines = src.read("labels.csv").decode().splitlines()
        images = [n for n in src.namelist() if n != "labels.csv"]
        rows = [lines[0]]
        for c in range(copies):
            for n in images:
                dst.writestr(f"c{c}/{n}", src.read(n))
            rows += [f"c{c}/{line}" for line in lines[1:]]
        dst.writestr("labels.csv", "\n".join(rows) + "\n")
    return expect(s.client.post("/v1/datasets", files={"file": ("big.zip", out.getvalue())}), 201)["id"]


def stop_while_running(s, url: str) -> dict:
    """Wait until the job runs, freeze the worker (SIGSTOP to its process group), cancel, let it go on: the job
    must see the cancel before it finishes."""
    import signal

    worker = next(p for p in s.procs if p.name.startswith("worker") and p.alive())
    deadline = time.monotonic() + 120
    while (body := expect(s.client.get(url), 200))["status"] == "queued":
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    worker.signal_group(signal.SIGSTOP)
    try:
        body = expect(s.client.get(url), 200)
        assert body["status"] == "running" and body["fraction"] < 1.0, f"finished before it could be stopped: {body}"
        assert expect(s.client.post(f"{url}/cancel"), 202)["status"] == "running"
    finally:
        worker.signal_group(signal.SIGCONT)
    return wait_status(s.client, url, ("succeeded", "failed", "cancelled"))


def test_cancel_stops_a_running_evaluation_and_batch_prediction(stack):
    s = stack
    dataset = big_dataset(s, copies=15)  # 2400 images
    base = "/v1/models/shapes/versions/1/evaluations"
    ev = expect(s.client.post(base, json={"dataset_id": dataset}), 202)
    ev = stop_while_running(s, f"{base}/{ev['id']}")
    assert ev["status"] == "cancelled" and ev["heads"] is None and ev["plots"] is None, ev
    assert not (s.data_dir / "results" / ev["id"]).exists()
    assert s.client.get(f"{base}/{ev['id']}/plots/category.png").status_code == 404

    batch = "/v1/models/shapes/batch-predictions"
    bp = expect(s.client.post(batch, json={"dataset_id": dataset}), 202)
    bp = stop_while_running(s, f"{batch}/{bp['id']}")
    assert bp["status"] == "cancelled" and bp["results"] is None, bp
    assert not (s.data_dir / "results" / bp["id"]).exists()
    assert s.client.get(f"{batch}/{bp['id']}/results.jsonl").status_code == 409
    assert not [p for p in (s.data_dir / "tmp").iterdir() if ev["id"] in p.name or bp["id"] in p.name]


def test_batch_prediction_streams_every_image_through_the_worker(stack, tmp_path):
    s, dataset = stack, stack.dataset
    base = "/v1/models/shapes/batch-predictions"
    prior = [b["id"] for b in expect(s.client.get(base), 200)["items"]]  # e.g. the cancelled ones above
    assert s.client.post(base, json={"dataset_id": "nope"}).status_code == 404
    assert s.client.post(base, json={"dataset_id": dataset, "version": 9}).status_code == 404
    assert s.client.post(base, json={"dataset_id": dataset, "version": 1, "alias": "production"}).status_code == 422
    expect(s.client.put("/v1/models/shapes/aliases/production", json={"version": 1}), 200)
    created = expect(s.client.post(base, json={"dataset_id": dataset, "alias": "production"}), 202)
    assert created["status"] == "queued" and created["model"] == {"name": "shapes", "version": 1}
    assert s.client.get(f"{base}/{created['id']}/results.jsonl").status_code in (409, 200)
    done = wait_status(s.client, f"{base}/{created['id']}", ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded" and done["images"] == N and done["fraction"] == 1.0, done
    assert [b["id"] for b in expect(s.client.get(base), 200)["items"]] == [created["id"], *prior]

    lines = [json.loads(x) for x in s.client.get(done["results"]["results.jsonl"]).text.splitlines()]
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as zf:
        names = [n for n in zf.namelist() if n.endswith((".png", ".jpg"))]
        assert sorted(x["path"] for x in lines) == sorted(names)
        sample = [lines[i] for i in (0, 1, N // 2, N - 1)]
        files = [("files", (x["path"], zf.read(x["path"]), "image/png")) for x in sample]
    v1 = expect(s.client.post("/v1/models/shapes/predict?version=1", files=files), 200)["predictions"]
    for line, pred in zip(sample, v1, strict=True):
        # labels and gates exactly; numbers to 1e-6 (the API serves a TorchScript trace, other batch sizes)
        assert close({k: v for k, v in line.items() if k != "path"}, pred), (line, pred)
    for line in lines:  # gated heads: suppressed with the reason, exactly when the predicted gate is negative
        negative = line["category"]["label"] not in ("circle", "square")
        assert line["size"]["gated"] is negative
        assert (line["size"]["value"] is None) is negative and ("reason" in line["size"]) is negative

    rows = list(csv.DictReader(io.StringIO(s.client.get(done["results"]["results.csv"]).text)))
    assert [r["path"] for r in rows] == [x["path"] for x in lines]
    header = list(rows[0])
    assert header[:2] == ["path", "category"] and "size.gated" in header and "size.reason" in header
    for row, line in zip(rows, lines, strict=True):
        assert row["category"] == line["category"]["label"]
        assert float(row["is_big.probability"]) == pytest.approx(line["is_big"]["probability"], rel=1e-12)
        assert row["size.gated"] == str(line["size"]["gated"])
        assert row["size"] == ("" if line["size"]["value"] is None else repr(line["size"]["value"]))

    # the CLI: `headwise predict --dataset` queues one, follows it and downloads the CSV
    out = tmp_path / "cli.csv"
    env = {**s.env, "HEADWISE_URL": s.base_url, "HEADWISE_API_KEY": s.admin_key}
    result = run_cli(["predict", "--model", "shapes", "--dataset", dataset, "--format", "csv", "--out", str(out)],
                     env, s, "cli-predict")
    assert result.returncode == 0 and f"{N} images -> {out}" in result.stdout, result.stderr
    assert [r["path"] for r in csv.DictReader(out.open())] == [r["path"] for r in rows]

    # one call: a zip of images without labels, uploaded as multipart `file`
    unlabelled = io.BytesIO()
    with zipfile.ZipFile(s.tmp / "dataset" / "example.zip") as src, zipfile.ZipFile(unlabelled, "w") as dst:
        for n in names[:5]:
            dst.writestr(f"batch/{n.rsplit('/', 1)[-1]}", src.read(n))
    up = expect(s.client.post(base, files={"file": ("imgs.zip", unlabelled.getvalue())}, data={"version": "1"}), 202)
    up = wait_status(s.client, f"{base}/{up['id']}", ("succeeded", "failed", "cancelled"))
    assert up["status"] == "succeeded" and up["images"] == 5 and up["dataset_id"] is None, up.get("error")
    paths = [json.loads(x)["path"] for x in s.client.get(up["results"]["results.jsonl"]).text.splitlines()]
    assert paths == sorted(f"batch/{n.rsplit('/', 1)[-1]}" for n in names[:5])
    labelled = io.BytesIO()
    with zipfile.ZipFile(labelled, "w") as z:
        z.writestr("a.png", b"not checked: the labels file is refused first")
        z.writestr("labels.csv", "image,category\na.png,circle\n")
    bad = s.client.post(base, files={"file": ("l.zip", labelled.getvalue())})
    assert bad.status_code == 422 and "'labels.csv' is not a PNG/JPEG image" in bad.json()["detail"], bad.text
    assert s.client.post(base, files={"file": ("x.tar", b"x")}).status_code == 415
    assert len(expect(s.client.get(base), 200)["items"]) == 3 + len(prior)

    # cancel: with no worker a new one stays queued and is cancelled at once; finished ones are 409
    s.kill(s.procs[-1])
    queued = expect(s.client.post(base, json={"dataset_id": dataset}), 202)
    cancelled = expect(s.client.post(f"{base}/{queued['id']}/cancel"), 200)
    assert cancelled["status"] == "cancelled" and cancelled["results"] is None
    assert s.client.get(f"{base}/{queued['id']}/results.csv").status_code == 409
    assert s.client.post(f"{base}/{created['id']}/cancel").status_code == 409
