"""Comparison jobs at the API: the compare block is checked (422 naming the field), counted by the job size guard,
stored with the job, and its report served (404 without a block, complete=false until the worker wrote it)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.db.base import session_scope
from service.db.tables import Job
from tests.api.conftest import tiny_spec


def _create(client, auth, dataset_id, compare, epochs=1):
    return client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "shapes",
                                                       "spec": tiny_spec(epochs), "compare": compare})


@pytest.mark.parametrize(("compare", "needle"), [
    ({"weighting": ["fixed", "nope"]}, "compare.weighting[1]: 'nope' is not a weighting strategy; allowed: fixed"),
    ({"weighting": "uncertainty"}, "compare.weighting: must be a list"),
    ({"seeds": 0, "single_task": True}, "compare.seeds: must be an integer from 1 to 5"),
    ({"seeds": 9, "single_task": True}, "compare.seeds: must be an integer from 1 to 5"),
    ({"single_task": True, "register": "worst"}, "compare.register: must be 'main' or 'best'"),
    ({"single_task": True, "extra": 1}, "compare.extra: unknown field"),
    ({"weighting": ["fixed"]}, "compare: nothing to compare"),
    ([1, 2], "body.compare: Input should be a valid dictionary"),
])
def test_bad_compare_block_422(client: TestClient, auth, dataset_id, enqueued, compare, needle) -> None:
    r = _create(client, auth, dataset_id, compare)
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json()["detail"]), r.text
    assert enqueued.job_ids == []


def test_compare_stored_and_report_served(client: TestClient, auth, dataset_id, enqueued, settings) -> None:
    r = _create(client, auth, dataset_id, {"single_task": True, "weighting": ["fixed", "uncertainty"], "seeds": 2})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["compare"] == {"single_task": True, "weighting": ["fixed", "uncertainty"], "seeds": 2,
                              "register": "main"}
    report = client.get(f"/v1/jobs/{job['id']}/comparison", headers=auth).json()
    # main (fixed), uncertainty, single-task (4 heads): 2 + 2 + 8 sub-runs; "fixed" is the main spec's own
    assert [v["name"] for v in report["variants"]] == ["main", "weighting:uncertainty", "single_task"]
    assert (report["runs_done"], report["runs_total"], report["complete"]) == (0, 12, False)
    assert report["status"] == "queued" and report["seeds"] == [0, 1] and report["heads"] == []
    png = client.get(f"/v1/jobs/{job['id']}/plots/comparison.png", headers=auth)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    plain = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "shapes",
                                                        "spec": tiny_spec()}).json()
    assert plain["compare"] is None
    missing = client.get(f"/v1/jobs/{plain['id']}/comparison", headers=auth)
    assert missing.status_code == 404 and "has no compare block" in missing.json()["detail"]
    with session_scope(settings.DATABASE_URL) as s:
        assert s.get(Job, job["id"]).params["plan"]["runs"][:3] == ["main/s0", "main/s1", "weighting:uncertainty/s0"]


def test_job_size_guard_counts_sub_runs(client: TestClient, auth, dataset_id, app) -> None:
    app.state.settings.JOB_MAX_SAMPLE_EPOCHS = 48 * 3  # 48 samples: 3 epochs fit one run, not 2 sub-runs of 2
    assert _create(client, auth, dataset_id, None, epochs=2).status_code == 202
    r = _create(client, auth, dataset_id, {"weighting": ["uncertainty"]}, epochs=2)
    assert r.status_code == 422
    assert "2 epochs x 48 samples x 2 sub-runs (compare) = 192 exceeds the per-job limit of 144" in r.text


def test_one_call_form_compare_field(client: TestClient, auth, example_zip) -> None:
    def post(compare: str):
        with open(example_zip, "rb") as fh:
            return client.post("/v1/jobs", headers=auth, files={"file": ("example.zip", fh)},
                               data={"spec": json.dumps(tiny_spec()), "model_name": "shapes", "compare": compare})

    bad = post('{"weighting": ["gradnorm", "bogus"]}')
    assert bad.status_code == 422 and "compare.weighting[1]: 'bogus'" in bad.text
    assert post("{not json").status_code == 422
    ok = post('{"weighting": ["gradnorm"], "register": "best"}')
    assert ok.status_code == 202, ok.text
    assert ok.json()["compare"]["register"] == "best"
