"""Comparison jobs end to end through real processes (issue 15): the API (in process, real enqueue) puts compare
jobs on the embedded broker, a REAL Celery worker trains every sub-run, and the report is read back from
GET /v1/jobs/{id}/comparison. On the example dataset (register "best", a gated head), on scikit-learn digits with a
head whose label is random (multi-task cannot help it: its verdict must not be "multi-task better"), and a cancel in
the middle of a comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.client.compare_cli import comparison_text
from service.db.base import session_scope
from service.db.tables import ModelVersion

from .test_celery_worker import TERMINAL, Worker, job_row, prepare, tiny_spec, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")]
ADMIN = "compare-admin-key"


def digits_npz(path: Path, n: int = 600) -> Path:
    """scikit-learn digits (8x8, one channel) with a `digit` head and a `coin` head labelled at random."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images[:n] * 255 / 16).astype(np.uint8)[..., None]
    coin = np.random.default_rng(7).integers(0, 2, len(images)).astype(bool)
    np.savez(path, images=images, digit=d.target[:n].astype(str), coin=coin)
    return path


def digits_spec() -> dict:
    return {"tasks": [{"name": "digit", "type": "multiclass"}, {"name": "coin", "type": "binary"}],
            "model": {"image_size": 8, "channels": 1, "width": 8, "depth": 1, "head_hidden": 16, "dropout": 0.0},
            "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "device": "cpu", "val_fraction": 0.3}}


def upload(client: TestClient, path: Path) -> str:
    with open(path, "rb") as fh:
        r = client.post("/v1/datasets", files={"file": (path.name, fh)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def submit(client: TestClient, dataset_id: str, spec: dict, compare: dict, name: str) -> str:
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model_name": name, "spec": spec, "compare": compare})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_comparisons_through_a_real_worker(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from service.api.app import create_app
    from service.config import get_settings

    data_dir = tmp_path / "data"
    settings = prepare(monkeypatch, tmp_path, f"sqlite:///{data_dir / 'headwise.db'}",
                       f"sqla+sqlite:///{data_dir / 'broker.db'}", PROGRESS_SECONDS="0.2", CANCEL_POLL_SECONDS="0.3")
    settings.pop("DATASET_ID")
    monkeypatch.setenv("HEADWISE_ADMIN_KEY", ADMIN)
    get_settings.cache_clear()
    worker = Worker(tmp_path / "worker.log", **settings)
    try:
        with TestClient(create_app(get_settings()), headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            from service.ml.examples import make_example_dataset

            shapes = upload(api, make_example_dataset(tmp_path / "shapes.zip", n=64, seed=2, image_size=16))
            digits = upload(api, digits_npz(tmp_path / "digits.npz"))
            spec = tiny_spec(epochs=2)
            example = submit(api, shapes, spec, {"single_task": True, "weighting": ["uncertainty"],
                                                 "register": "best"}, "shapes-cmp")
            digit_job = submit(api, digits, digits_spec(), {"single_task": True, "seeds": 2}, "digits-cmp")
            # long enough to be cancelled while its second sub-run trains: ~3 s per sub-run here (100 epochs of
            # ~30 ms), against a cancel that lands within ~1 s (8 epochs finished before the cancel in CI)
            long_spec = tiny_spec(epochs=100)  # (tiny_spec turns early stopping off)
            cancelled = submit(api, shapes, long_spec, {"weighting": ["uncertainty", "dwa"]}, "cancel-cmp")

            job = wait_for(example, lambda j: j.status in TERMINAL, 240, worker)
            assert job.status == "succeeded", f"{job.error}\n{worker.output()}"
            check_example(api, example, job)

            job = wait_for(digit_job, lambda j: j.status in TERMINAL, 240, worker)
            assert job.status == "succeeded", f"{job.error}\n{worker.output()}"
            check_digits(api, digit_job)

            wait_for(cancelled, lambda j: len(((j.params or {}).get("comparison") or {}).get("runs") or {}) >= 1,
                     240, worker)
            assert api.post(f"/v1/jobs/{cancelled}/cancel").status_code == 202
            job = wait_for(cancelled, lambda j: j.status in TERMINAL, 60, worker)
            assert job.status == "cancelled"
            report = api.get(f"/v1/jobs/{cancelled}/comparison").json()
            assert report["status"] == "cancelled" and not report["complete"]
            assert 1 <= report["runs_done"] < report["runs_total"] == 3
            with session_scope() as session:
                assert session.query(ModelVersion).filter_by(job_id=cancelled).count() == 0
            assert not (data_dir / "jobs" / cancelled).exists()  # the sub-runs' checkpoints are cleaned up
    finally:
        worker.stop()


def check_example(api: TestClient, job_id: str, job) -> None:
    report = api.get(f"/v1/jobs/{job_id}/comparison").json()
    assert report["complete"] and report["runs_done"] == report["runs_total"] == 6  # main, uncertainty, 4 heads
    assert [h["head"] for h in report["heads"]] == ["category", "is_big", "size", "hue"]
    for head in report["heads"]:
        assert [r["variant"] for r in head["results"]] == ["main", "weighting:uncertainty", "single_task"]
        assert all(r["mean"] is not None and r["labelled"] > 0 for r in head["results"])
        assert head["verdict"]["single_task"] in ("multi-task better", "multi-task worse", "within noise")
        assert head["verdict"]["method"] == "bootstrap" and head["baseline"]["value"] is not None
    size = next(h for h in report["heads"] if h["head"] == "size")
    # the gated head's single-task model is scored on exactly the rows the multi-task head is
    assert size["metric"] == "rmse" and not size["higher_is_better"]
    assert len({r["labelled"] for r in size["results"]}) == 1
    best = report["best_weighting"]
    assert best["variant"] in ("main", "weighting:uncertainty")
    assert report["registered"]["variant"] == best["variant"] and report["registered"]["version"] == 1
    main_metrics = [r["values"][0] for h in report["heads"] for r in h["results"] if r["variant"] == best["variant"]]
    assert main_metrics == [job.metrics["tasks"][h["head"]][h["metric"]] for h in report["heads"]]
    assert all(v["compute"]["epochs"] > 0 and v["compute"]["seconds"] > 0 for v in report["variants"])
    assert job.progress["fraction"] == 1.0 and job.progress["epochs"] == 12
    text = comparison_text(report)  # what `headwise jobs compare` prints
    assert "category  accuracy ^  single_task" in text and "best weighting overall" in text
    assert f"registered: {best['variant']} (seed 0) as version 1" in text
    png = api.get(f"/v1/jobs/{job_id}/plots/comparison.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert png.headers["cache-control"].startswith("private")  # the worker's stored plot


def check_digits(api: TestClient, job_id: str) -> None:
    report = api.get(f"/v1/jobs/{job_id}/comparison").json()
    assert report["runs_total"] == 6 and report["seeds"] == [0, 1]
    heads = {h["head"]: h for h in report["heads"]}
    coin = heads["coin"]  # random labels: nothing to share, nothing to learn
    assert coin["verdict"]["single_task"] != "multi-task better", coin
    # (noise may be 0: a random head often ends predicting its majority class in every variant and seed)
    assert coin["verdict"]["method"] == "seeds+bootstrap" and coin["verdict"]["noise"] >= 0
    assert all(len(r["values"]) == 2 and r["std"] is not None for r in coin["results"])
    digit = heads["digit"]
    assert digit["beats_baseline"] is True and digit["baseline"]["kind"] == "majority class"
    assert report["registered"]["variant"] == "main"
    assert job_row(job_id).metrics["tasks"]["digit"]["accuracy"] == digit["results"][0]["values"][0]
