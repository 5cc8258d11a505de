"""End to end against a real `headwise serve` (uvicorn + a real Celery worker process, embedded mode):
the CLI walk-through from the README, the SSE stream over real HTTP, and the PNG plot endpoints."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from service.client import TERMINAL_STATUSES, Conflict, NotFound
from tests.e2e.harness import run_cli
from tests.ui.conftest import tiny_spec
from tests.ui.helpers import decode_png

pytestmark = pytest.mark.slow
TASKS = ("category", "is_big", "size", "hue")


def cli(live, tmp_path: Path, name: str, *args: str, key: str | None = None):
    env = {**live.env, "HEADWISE_URL": live.url, "HEADWISE_API_KEY": key or live.key}
    return run_cli(list(args), env, live.book, name, timeout=300)


def extract_images(dataset: Path, out: Path, count: int = 6) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dataset) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:count]
        paths = []
        for n in names:
            path = out / Path(n).name
            path.write_bytes(zf.read(n))
            paths.append(path)
    return paths


def test_cli_walkthrough(live, tmp_path: Path) -> None:
    data = tmp_path / "shapes.zip"
    r = cli(live, tmp_path, "example-dataset", "example-dataset", str(data), "--n", "160", "--image-size", "16",
            "--epochs", "4")
    assert r.returncode == 0, r.stderr
    spec_path = tmp_path / "shapes.spec.json"
    assert data.is_file() and spec_path.is_file()

    r = cli(live, tmp_path, "upload", "datasets", "upload", str(data), "--name", "cli-shapes")
    assert r.returncode == 0, r.stderr
    dataset_id = re.search(r"dataset ([0-9a-f]{32})", r.stdout).group(1)
    assert "samples=160" in r.stdout and "category" in r.stdout and "categorical" in r.stdout

    r = cli(live, tmp_path, "datasets-ls", "datasets", "ls")
    assert r.returncode == 0 and dataset_id in r.stdout and "cli-shapes" in r.stdout

    r = cli(live, tmp_path, "train", "train", "--dataset", dataset_id, "--spec", str(spec_path), "--model",
            "cli-shapes", "--watch")
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"job ([0-9a-f]{32}) queued", r.stdout).group(1)
    bars = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert [re.search(r"\]  epoch (\d+)/4  ", b).group(1) for b in bars] == ["1", "2", "3", "4"], r.stdout
    assert "category accuracy" in bars[-1] and "size mae" in bars[-1] and re.search(r"\d+ img/s  ETA \d+s", bars[-1])
    assert f"job {job_id} succeeded: model cli-shapes version 1" in r.stdout
    assert re.search(r"^category\s+accuracy\s+[0-9.]+", r.stdout, re.M)

    r = cli(live, tmp_path, "jobs-ls", "jobs", "ls")
    assert r.returncode == 0 and re.search(rf"{job_id}\s+succeeded\s+cli-shapes\s+4/4\s+1", r.stdout), r.stdout
    r = cli(live, tmp_path, "jobs-show", "jobs", "show", job_id)
    assert r.returncode == 0 and "status=succeeded" in r.stdout and "model: cli-shapes v1" in r.stdout

    images = extract_images(data, tmp_path / "images")
    r = cli(live, tmp_path, "predict", "predict", "--model", "cli-shapes", *map(str, images))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "model cli-shapes version 1"
    assert lines[1].split() == ["image", *TASKS]
    rows = lines[3:]
    assert len(rows) == len(images) and all(row.startswith(p.name) for row, p in zip(rows, images, strict=True))
    for row in rows:  # a 'none' category suppresses the gated size head, with the reason
        if re.match(r"\S+\s+none ", row):
            assert "suppressed (category predicted 'none')" in row, row
    r = cli(live, tmp_path, "predict-json", "predict", "--model", "cli-shapes", "--version", "1", "--json",
            str(images[0]))
    assert r.returncode == 0 and '"predictions"' in r.stdout

    r = cli(live, tmp_path, "cancel-finished", "jobs", "cancel", job_id)
    assert r.returncode == 1 and "409 Conflict" in r.stderr
    r = cli(live, tmp_path, "predict-404", "predict", "--model", "no-such-model", str(images[0]))
    assert r.returncode == 1 and "404 NotFound" in r.stderr
    r = cli(live, tmp_path, "bad-key", "datasets", "ls", key="hw_not_a_real_key")
    assert r.returncode == 1 and "401 Unauthorized" in r.stderr


@pytest.fixture(scope="module")
def shapes(live, tmp_path_factory):
    """A dataset and a model trained on it through the Python client."""
    from service.ml.examples import make_example_dataset

    folder = tmp_path_factory.mktemp("shapes")
    data = make_example_dataset(folder / "shapes.zip", n=160, seed=1, image_size=16)
    with live.client() as c:
        dataset = c.upload_dataset(data, name="client-shapes")
        job = c.create_job(dataset.id, "client-shapes", tiny_spec(epochs=3))
        job = c.wait_for_job(job.id, timeout=300, interval=0.5)
    assert job.status == "succeeded", job
    return {"dataset": dataset, "job": job, "path": data}


def test_client_against_the_server(live, shapes) -> None:
    with live.client() as c:
        assert c.health().status == "ok"
        assert c.ready().status == "ok"
        assert shapes["dataset"].id in [d.id for d in c.list_datasets()]
        assert c.get_dataset(shapes["dataset"].id).num_samples == 160
        audit = c.audit(shapes["dataset"].id, tiny_spec())
        assert set(audit.audit["tasks"]) == set(TASKS) and audit.spec_errors == []
        model = c.get_model("client-shapes")
        assert [v.version for v in model.versions] == [1]
        assert "client-shapes" in [m.name for m in c.list_models()]
        version = c.get_version("client-shapes", 1)
        assert version.job_id == shapes["job"].id
        with zipfile.ZipFile(io.BytesIO(c.download_artifact("client-shapes", 1))) as zf:
            assert {"model.safetensors", "spec.json", "meta.json", "checksums.json"} <= set(zf.namelist())
        with zipfile.ZipFile(shapes["path"]) as zf:
            image = zf.read(sorted(n for n in zf.namelist() if n.endswith(".png"))[0])
        result = c.predict("client-shapes", [image, image])
        assert (result.model.name, result.model.version) == ("client-shapes", 1)
        assert len(result.predictions) == 2 and set(TASKS) <= set(result.predictions[0])
        single = c.predict("client-shapes", image, as_json=True).predictions  # base64 JSON body, batch of 1
        assert len(single) == 1
        assert single[0]["category"].label == result.predictions[0]["category"].label
        assert single[0]["hue"].value == pytest.approx(result.predictions[0]["hue"].value, abs=1e-4)
        with pytest.raises(Conflict) as info:
            c.cancel_job(shapes["job"].id)
        assert info.value.kind == "Conflict" and shapes["job"].id in info.value.detail
        with pytest.raises(NotFound):
            c.get_version("client-shapes", 9)


def test_plot_endpoints_over_http(live, shapes) -> None:
    with live.client(timeout=300) as c:
        curves = c.job_curves_png(shapes["job"].id)
        decode_png(curves, min_size=(600, 300))
        for task in TASKS:
            png = c.task_plot_png("client-shapes", 1, task)
            decode_png(png, min_size=(300, 300))
            assert c.task_plot_png("client-shapes", 1, task) == png  # cached after the first render
        with pytest.raises(NotFound) as info:
            c.task_plot_png("client-shapes", 1, "no_such_task")
        assert "tasks are: category, is_big, size, hue" in info.value.detail


def test_sse_is_live_resumable_and_ends_on_cancel(live, shapes) -> None:
    """A long job: the stream delivers epochs while it runs, resumes after Last-Event-ID without repeats,
    and ends with a final 'cancelled' status event after a cancel."""
    with live.client() as c:
        spec = tiny_spec(epochs=300)
        spec["training"]["early_stopping"] = False  # runs until cancelled (early stopping ended it at ~epoch 8)
        job = c.create_job(shapes["dataset"].id, "sse-long", spec)
        seen: list[str] = []
        for ev in c.job_events(job.id, timeout=120):
            seen.append(ev.event)
            if ev.event == "epoch" and ev.data["epoch"] == 2:
                assert ev.id == "2" and ev.data["epochs"] == 300
                assert set(ev.data["val"]) == set(TASKS) and isinstance(ev.data["eta_seconds"], float)
                break  # drop the connection mid-job
        assert seen[0] == "status" and seen.count("epoch") == 2
        assert c.get_job(job.id).status == "running"  # the events came while it trained
        resumed = []
        for ev in c.job_events(job.id, last_event_id=2, timeout=120):
            resumed.append(ev)
            if ev.event == "epoch" and len([e for e in resumed if e.event == "epoch"]) == 1:
                assert ev.data["epoch"] == 3, "resume must continue right after Last-Event-ID"
                c.cancel_job(job.id)
        epochs = [e.data["epoch"] for e in resumed if e.event == "epoch"]
        assert epochs == list(range(3, 3 + len(epochs)))
        assert resumed[-1].event == "status" and resumed[-1].data["status"] == "cancelled"
        assert resumed[-1].data["status"] in TERMINAL_STATUSES
