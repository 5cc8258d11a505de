"""Trivial baselines in the job and version responses and the CLI views: the metrics a real training run stored
(meta.json of the session's tiny trained artifact) go through the API schema unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from service.client.render import baseline_summary, baseline_table
from service.db.base import session_scope
from service.db.tables import Job, ModelVersion

KEYS = {"metric", "kind", "value", "baseline", "beats_baseline"}


def test_job_and_version_show_each_heads_baseline(client: TestClient, auth, settings, register_model,
                                                  trained_artifact: Path) -> None:
    metrics = json.loads((trained_artifact / "meta.json").read_text())["metrics"]
    heads = [t["name"] for t in json.loads((trained_artifact / "spec.json").read_text())["tasks"]]
    assert set(metrics["baselines"]) == set(heads) and all(set(b) == KEYS for b in metrics["baselines"].values())
    job_id, version_id = register_model("shapes")
    for name in heads:  # one flagged head, whatever the 1-epoch tiny model learned
        metrics["baselines"][name]["beats_baseline"] = name != heads[0]
    with session_scope(settings.DATABASE_URL) as s:
        s.get(Job, job_id).metrics = metrics
        s.get(ModelVersion, version_id).metrics = metrics

    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    version = client.get("/v1/models/shapes/versions/1", headers=auth).json()
    for body in (job, version):
        assert body["metrics"]["tasks"] == metrics["tasks"]  # the existing fields stay
        assert body["metrics"]["baselines"] == metrics["baselines"]
        assert body["metrics"]["baselines"][heads[0]]["beats_baseline"] is False
    assert baseline_summary(version["metrics"]) == f"flagged: {heads[0]}"
    text = baseline_table(job["metrics"])
    assert text.splitlines()[0].split() == ["task", "metric", "model", "trivial", "baseline", "beats", "it"]
    assert any(line.startswith(heads[0]) and line.endswith("NO: flagged") for line in text.splitlines())
    assert baseline_table({"val_loss": 1.0}) is None and baseline_summary({}) == ""  # versions from before
