"""The audit is a dry run of POST /v1/jobs: 200 with `fits` (would the job be accepted?), the 422 messages it
would give (`spec_errors`, `limit_errors`) and the warnings; the job created from the same spec stores the
same warnings; over the memory budget the audit says fits=false where POST /v1/jobs answers 422."""

from __future__ import annotations

import json
from pathlib import Path

from service.api.app import init_state
from tests.api.conftest import upload
from tests.contract.conftest import live_url  # noqa: F401 - pytest fixture
from tests.ml.conftest import labels_text, png_bytes, write_zip


def warned_zip(tmp: Path) -> Path:
    """24 rows: 'level' constant; 'size' (gated on shape = circle or square) labelled on circles only."""
    rows = [{"image": f"{k}.png", "shape": ("circle", "square")[k % 2], "level": "3",
             "size": str(k) if k % 2 == 0 else None} for k in range(24)]
    members: dict[str, bytes | str] = {r["image"]: png_bytes((8, 8), color=(10 * k, 90, 40))
                                       for k, r in enumerate(rows)}
    members["labels.csv"] = labels_text(rows)
    return write_zip(tmp / "warned.zip", members)


SPEC = {"tasks": [{"name": "shape", "type": "multiclass"}, {"name": "level", "type": "regression"},
                  {"name": "size", "type": "regression", "gate": {"task": "shape", "classes": ["circle", "square"]}}],
        "model": {"image_size": 8, "width": 4, "depth": 1},
        "training": {"epochs": 1, "batch_size": 8, "device": "cpu", "val_fraction": 0.25}}


def test_warnings_in_the_audit_and_on_the_job(client, auth, tmp_path: Path) -> None:
    ds = upload(client, auth, warned_zip(tmp_path)).json()["id"]
    audit = client.post(f"/v1/datasets/{ds}/audit", headers=auth, json={"spec": SPEC})
    assert audit.status_code == 200, audit.text
    body = audit.json()
    assert body["fits"] is True and body["spec_errors"] == [] and body["limit_errors"] == []
    got = {(w["code"], w["task"], w["column"], w.get("class")) for w in body["warnings"]}
    assert got == {("constant", "level", "level", None), ("gate_no_labels", "size", "size", "square")}, got
    assert [w["message"] for w in body["warnings"]] == body["audit"]["warnings"][-2:]

    job = client.post("/v1/jobs", headers=auth, json={"dataset_id": ds, "model_name": "w", "spec": SPEC})
    assert job.status_code == 202, job.text
    assert job.json()["warnings"] == body["warnings"]
    again = client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json()
    assert again["warnings"] == body["warnings"]


def test_over_the_budget_the_audit_says_fits_false_where_creation_answers_422(client, app, settings, auth,
                                                                              tmp_path: Path) -> None:
    init_state(app, settings.model_copy(update={"WORKER_MEMORY_BYTES": 64 * 1024**2}))
    ds = upload(client, auth, warned_zip(tmp_path)).json()["id"]
    spec = {**SPEC, "model": {"image_size": 64, "width": 32, "depth": 2}}
    created = client.post("/v1/jobs", headers=auth, json={"dataset_id": ds, "model_name": "w", "spec": spec})
    assert created.status_code == 422, created.text
    body = client.post(f"/v1/datasets/{ds}/audit", headers=auth, json={"spec": spec}).json()
    assert body["fits"] is False and body["spec_errors"] == []
    assert "; ".join(body["limit_errors"]) == created.json()["detail"], (body["limit_errors"], created.json())
    assert body["memory"]["fits"] is False and body["memory"]["workers"] == {"alive": 0, "fit": 0,
                                                                             "budgets_bytes": []}
    bad = client.post(f"/v1/datasets/{ds}/audit", headers=auth,
                      json={"spec": {**SPEC, "tasks": [{"name": "nope", "type": "binary"}]}}).json()
    assert bad["fits"] is False and "tasks[0].name: column 'nope'" in bad["spec_errors"][0]


def test_the_cli_prints_the_warnings_and_fails_a_spec_that_does_not_fit(live_url, app, settings, make_key,  # noqa: F811
                                                                       tmp_path: Path, capsys) -> None:
    from service.client.cli import main as cli_main

    key = make_key()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    conn = ["--url", live_url, "--key", key]
    assert cli_main(["train", "--file", str(warned_zip(tmp_path)), "--spec", str(spec_path), "--model", "w",
                     *conn]) == 0
    out, err = capsys.readouterr()
    assert "warning: task 'level' (column 'level'): every labelled value is 3" in err, err
    job_id = next(line.split()[1] for line in out.splitlines() if line.startswith("job "))
    dataset = next(line.split()[1] for line in out.splitlines() if line.startswith("dataset "))
    assert cli_main(["jobs", "show", job_id, *conn]) == 0
    assert "  warning: task 'size' (column 'size'): its gate 'shape' = 'square'" in capsys.readouterr().out

    assert cli_main(["datasets", "audit", dataset, "--spec", str(spec_path), *conn]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["fits"] is True and json.loads(out)["warnings"][0]["class"] is None
    assert err.count("warning: ") == 2 and "fits: POST /v1/jobs would accept this spec" in err
    init_state(app, settings.model_copy(update={"WORKER_MEMORY_BYTES": 64 * 1024**2}))
    assert cli_main(["datasets", "audit", dataset, "--spec", str(spec_path), *conn]) == 1
    err = capsys.readouterr().err
    assert "error: training.batch_size: estimated peak training memory" in err and "does not fit" in err
