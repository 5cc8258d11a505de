"""One call (issue 12): POST /v1/jobs as multipart uploads the dataset and queues the job in one transaction;
every failure kind is a 4xx naming the field/row/column and leaves no rows, no files and nothing enqueued.
POST /v1/datasets with a `spec` field checks every label at upload."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.api.conftest import bearer, data_files, make_zip, tiny_spec


def with_bad_size(example_zip: Path, out: Path, value: str = "abc") -> Path:
    """The example dataset with `value` in the `size` column of its 3rd data row (labels.csv row 3)."""
    with zipfile.ZipFile(example_zip) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "labels.csv":
                lines = data.decode().splitlines()
                cells = lines[3].split(",")
                cells[3] = value
                lines[3] = ",".join(cells)
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(name, data)
    return out


def one_call(client: TestClient, headers: dict, path: Path | None, spec=None, model_name: str | None = "shapes",
             **extra: str):
    data = {k: v for k, v in {"model_name": model_name, **extra}.items() if v is not None}
    if spec is not None:
        data["spec"] = spec if isinstance(spec, str) else json.dumps(spec)
    if path is None:  # multipart with text fields only
        return client.post("/v1/jobs", headers=headers, files={k: (None, v) for k, v in data.items()})
    return client.post("/v1/jobs", headers=headers, data=data, files={"file": (path.name, path.read_bytes())})


def counts(app) -> tuple[int, int]:
    with app.state.sessionmaker() as s:
        return (s.execute(text("SELECT count(*) FROM datasets")).scalar_one(),
                s.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def test_one_call_creates_dataset_and_job(client: TestClient, auth, app, enqueued, example_zip: Path) -> None:
    r = one_call(client, auth, example_zip, tiny_spec(), dataset_name="shapes-oct")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["model_name"] == "shapes" and job["dataset_id"]
    assert enqueued.job_ids == [job["id"]] and enqueued.seen_committed == [True]
    dataset = client.get(f"/v1/datasets/{job['dataset_id']}", headers=auth).json()
    assert dataset["name"] == "shapes-oct" and dataset["num_samples"] == 48
    assert job["spec"]["tasks"][0]["classes"]  # the resolved spec (classes filled in from the data)
    assert counts(app) == (1, 1)
    r = one_call(client, auth, example_zip, tiny_spec())  # default dataset name: the file's stem
    assert client.get(f"/v1/datasets/{r.json()['dataset_id']}", headers=auth).json()["name"] == example_zip.stem


def test_json_form_unchanged(client: TestClient, auth, dataset_id: str, enqueued) -> None:
    r = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "m", "spec": tiny_spec()})
    assert r.status_code == 202 and r.json()["dataset_id"] == dataset_id
    r = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "spec": {}})
    assert r.status_code == 422 and "body.model_name" in r.json()["detail"]


FAILURES = [
    # (id, spec, model_name, extra fields, file maker, status, words in the detail)
    ("label-wrong-kind", tiny_spec(), "shapes", {}, "bad_size", 422, ["row 3", "column 'size'", "abc"]),
    ("spec-invalid", {**tiny_spec(), "training": {"epochs": 0}}, "shapes", {}, "example", 422, ["training.epochs"]),
    ("spec-not-json", "{tasks: everything", "shapes", {}, "example", 422, ["spec: not valid JSON"]),
    ("spec-not-object", "[1, 2]", "shapes", {}, "example", 422, ["spec: must be a JSON object"]),
    ("spec-missing", None, "shapes", {}, "example", 422, ["spec: field required"]),
    ("spec-unknown-column", {**tiny_spec(), "tasks": [{"name": "x", "column": "nope", "type": "binary"}]},
     "shapes", {}, "example", 422, ["nope"]),
    ("model-name-missing", tiny_spec(), None, {}, "example", 422, ["model_name: field required"]),
    ("model-name-bad", tiny_spec(), "../etc", {}, "example", 422, ["model_name"]),
    ("dataset-name-too-long", tiny_spec(), "shapes", {"dataset_name": "x" * 201}, "example", 422,
     ["dataset_name"]),
    ("unexpected-field", tiny_spec(), "shapes", {"dataset_id": "abc"}, "example", 422, ["dataset_id"]),
    ("not-an-archive", tiny_spec(), "shapes", {}, "text", 415, ["not a .zip or .npz"]),
    ("corrupt-archive", tiny_spec(), "shapes", {}, "corrupt", 422, ["not a valid zip"]),
    ("no-labels", tiny_spec(), "shapes", {}, "no_labels", 422, ["label"]),
    ("file-missing", tiny_spec(), "shapes", {}, None, 422, ["file: field required"]),
]


@pytest.mark.parametrize(("case", "spec", "model_name", "extra", "maker", "status", "words"), FAILURES,
                         ids=[f[0] for f in FAILURES])
def test_one_call_failure_leaves_nothing(client: TestClient, auth, app, settings, enqueued, example_zip: Path,
                                         tmp_path: Path, case, spec, model_name, extra, maker, status,
                                         words) -> None:
    files = {
        "example": lambda: example_zip,
        "bad_size": lambda: with_bad_size(example_zip, tmp_path / "data.zip"),
        "text": lambda: (tmp_path / "data.txt").write_text("hello") and tmp_path / "data.txt",
        "corrupt": lambda: (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 not really") and tmp_path / "data.zip",
        "no_labels": lambda: make_zip(tmp_path / "data.zip", {"readme.md": b"no labels here"}),
        None: lambda: None,
    }
    before = data_files(settings)
    r = one_call(client, auth, files[maker](), spec, model_name, **extra)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["detail"], r.json()
    assert counts(app) == (0, 0)
    assert data_files(settings) == before == []
    assert enqueued.job_ids == [] and enqueued.seen_committed == []


def test_one_call_too_large_and_scopes(client: TestClient, app, settings, make_key, enqueued,
                                       example_zip: Path) -> None:
    jobs_only = bearer(make_key(["jobs:write"]))
    r = one_call(client, jobs_only, example_zip, tiny_spec())
    assert r.status_code == 403 and "datasets:write" in r.json()["detail"]
    settings.MAX_UPLOAD_BYTES = 1000
    r = one_call(client, bearer(make_key()), example_zip, tiny_spec())
    assert r.status_code == 413, r.text
    assert counts(app) == (0, 0) and data_files(settings) == [] and enqueued.job_ids == []


def test_one_call_broker_down_is_503(client: TestClient, auth, app, enqueued, example_zip: Path) -> None:
    enqueued.fail = True
    r = one_call(client, auth, example_zip, tiny_spec())
    assert r.status_code == 503 and "could not be queued" in r.json()["detail"]
    job = client.get("/v1/jobs", headers=auth).json()["items"][0]
    assert job["status"] == "failed" and "enqueue" in job["error"]  # recorded, as for the JSON form


def test_upload_with_spec_checks_labels(client: TestClient, auth, app, settings, example_zip: Path,
                                        tmp_path: Path) -> None:
    bad = with_bad_size(example_zip, tmp_path / "bad.zip")
    spec = json.dumps(tiny_spec())
    r = client.post("/v1/datasets", headers=auth, files={"file": ("bad.zip", bad.read_bytes())}, data={"spec": spec})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "labels.csv row 3" in detail and "column 'size'" in detail and "abc" in detail
    assert counts(app) == (0, 0) and data_files(settings) == []
    r = client.post("/v1/datasets", headers=auth, files={"file": ("bad.zip", bad.read_bytes())})
    assert r.status_code == 201  # without a spec the labels' meaning is unknown: accepted as before
    r = client.post("/v1/datasets", headers=auth, files={"file": ("ok.zip", example_zip.read_bytes())},
                    data={"spec": spec})
    assert r.status_code == 201 and r.json()["num_samples"] == 48
    r = client.post("/v1/datasets", headers=auth, files={"file": ("ok.zip", example_zip.read_bytes())},
                    data={"spec": "{nope"})
    assert r.status_code == 422 and r.json()["detail"].startswith("spec: not valid JSON")


def test_one_call_from_python_client_and_cli(live_url: str, make_key, app, enqueued, example_zip: Path,
                                             tmp_path: Path, capsys) -> None:
    from service.client import Client, Invalid
    from service.client.cli import main as cli_main

    key = make_key()
    with Client(live_url, key) as c:
        job = c.train(example_zip, tiny_spec(), "shapes", dataset_name="from-sdk")
        assert job.status == "queued" and c.get_dataset(job.dataset_id).name == "from-sdk"
        with pytest.raises(Invalid) as info:
            c.train(with_bad_size(example_zip, tmp_path / "bad.zip"), tiny_spec(), "shapes")
        assert "column 'size'" in info.value.detail
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(tiny_spec()))
    code = cli_main(["train", "--file", str(example_zip), "--spec", str(spec_path), "--model", "cli-one",
                     "--url", live_url, "--key", key])
    out = capsys.readouterr().out
    assert code == 0 and "uploaded" in out and "(model cli-one)" in out
    assert counts(app) == (2, 2) and len(enqueued.job_ids) == 2
