"""run_job with real (tiny) training on SQLite: success, redelivery, cancel, readable failures, resume,
rate-limited progress writes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest

from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.db.base import session_scope
from service.db.tables import Dataset, Job, ModelVersion, RegisteredModel
from service.storage import Storage
from worker import reaper
from worker.jobs import run_job

from .conftest import add_dataset, add_job, make_env

pytest.importorskip("torch")
from service.ml.examples import example_spec, make_example_dataset  # noqa: E402


def tiny_spec(epochs: int = 2) -> dict:
    spec = example_spec(image_size=16, weighting="fixed", epochs=epochs)
    spec["model"].update({"width": 8, "depth": 1, "head_hidden": 8})
    # every epoch runs unless stopped: the cancel and progress tests count on it (early stopping is on by default)
    spec["training"].update({"batch_size": 32, "device": "cpu", "early_stopping": False})
    return spec


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory) -> Path:
    return make_example_dataset(tmp_path_factory.mktemp("ds") / "shapes.zip", n=64, seed=1, image_size=16)


@pytest.fixture
def dataset_id(env, example_zip) -> str:
    return add_dataset(example_zip, env.data_dir)


def row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def versions() -> list[ModelVersion]:
    with session_scope() as session:
        found = session.query(ModelVersion).all()
        session.expunge_all()
        return found


def row_dataset_path(dataset_id: str) -> str:
    with session_scope() as session:
        return session.get(Dataset, dataset_id).path


def test_success_creates_exactly_one_checksummed_version(env, dataset_id):
    job_id = add_job(dataset_id, tiny_spec())
    assert run_job(job_id) == "succeeded"
    job = row(job_id)
    assert job.status == "succeeded" and job.error is None and job.attempts == 1
    assert job.progress == {"epoch": 2, "epochs": 2, "fraction": 1.0}
    assert [h["epoch"] for h in job.history] == [1, 2]
    assert "val_loss" in job.metrics and job.finished_at is not None

    [version] = versions()
    assert version.version == 1 and version.job_id == job_id and version.dataset_id == dataset_id
    assert version.spec["tasks"][0]["classes"] == tiny_spec()["tasks"][0]["classes"]
    storage = Storage(env.data_dir)
    artifact = storage.abs(version.artifact_path)
    assert artifact == storage.artifact_dir(version.model_id, 1)
    assert set(version.checksums) == {"model.safetensors", "spec.json", "meta.json", "model.onnx"}
    for name, digest in version.checksums.items():
        assert hashlib.sha256((artifact / name).read_bytes()).hexdigest() == digest
    assert json.loads((artifact / "checksums.json").read_text()) == version.checksums
    # each head's primary metric beside its trivial baseline, in the job row, the version row and meta.json
    heads = {t["name"] for t in tiny_spec()["tasks"]}
    assert set(job.metrics["baselines"]) == heads and version.metrics["baselines"] == job.metrics["baselines"]
    assert json.loads((artifact / "meta.json").read_text())["metrics"]["baselines"] == job.metrics["baselines"]
    # reports stored with the version: the validation split's indices and predictions, curves, one plot per head
    from service.ml.data import load_training_data
    from service.ml.spec import parse_spec
    from service.ml.train import stratified_split
    from service.reports.version import task_file

    reports = artifact / "reports"
    validation = json.loads((reports / "validation.json").read_text())
    spec, data = load_training_data(parse_spec(version.spec), storage.abs(row_dataset_path(dataset_id)),
                                    storage.dataset_cache_dir(dataset_id))
    assert validation["indices"] == [int(i) for i in stratified_split(spec, data)[1]]
    assert len(validation["predictions"]) == len(validation["indices"]) > 0
    names = {t["name"] for t in version.spec["tasks"]}
    assert set(validation["predictions"][0]) == names
    assert {p.name for p in reports.iterdir()} == {"validation.json", "curves.png", *map(task_file, names)}
    with session_scope() as session:
        [model] = session.query(RegisteredModel).all()
        assert (model.name, model.team, model.id) == ("pets", "default", version.model_id)
    assert not storage.job_dir(job_id).exists()  # checkpoints cleaned up
    assert list(storage.tmp_dir.iterdir()) == []  # no staging left behind

    # redelivery of the finished job does nothing
    assert run_job(job_id) == "skipped"
    assert len(versions()) == 1 and row(job_id).attempts == 1

    # a second job of the same model gets version 2 (the predictor loads it)
    second = add_job(dataset_id, tiny_spec(epochs=1))
    assert run_job(second) == "succeeded"
    assert sorted(v.version for v in versions()) == [1, 2]
    from service.ml.inference import Predictor

    mv2 = next(v for v in versions() if v.version == 2)
    from PIL import Image

    out = Predictor.load(storage.abs(mv2.artifact_path)).predict([Image.new("RGB", (16, 16))])
    assert set(out[0]) == {"category", "is_big", "size", "hue"}


def test_cancel_while_running_ends_cancelled(tmp_path, monkeypatch, example_zip):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'db.sqlite'}", CANCEL_POLL_SECONDS="0.05")
    job_id = add_job(add_dataset(example_zip, data_dir), tiny_spec(epochs=200))

    def cancel_when_running() -> None:
        for _ in range(600):
            job = row(job_id)
            if job.status == "running" and job.progress.get("epoch"):
                with session_scope() as session:
                    assert jobs_repo.request_job_cancel(session=session, job_id=job_id)
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    assert run_job(job_id) == "cancelled"
    canceller.join()
    assert time.monotonic() - started < 60
    job = row(job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert 1 <= job.progress["epoch"] < 200
    assert versions() == []
    assert not Storage(data_dir).job_dir(job_id).exists()


def test_spec_error_fails_with_its_message(env, dataset_id):
    spec = tiny_spec()
    spec["tasks"][1]["name"] = "is_bigg"
    job_id = add_job(dataset_id, spec)
    assert run_job(job_id) == "failed"
    error = row(job_id).error
    assert "is_bigg" in error and "not in the dataset" in error and not error.startswith("SpecError")
    assert versions() == []


def test_bad_labels_fail_with_a_readable_message(env, tmp_path, example_zip):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(example_zip) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "labels.csv":
                lines = data.decode().splitlines()
                header = lines[0].split(",")
                cells = lines[3].split(",")
                cells[header.index("hue")] = "abc"
                lines[3] = ",".join(cells)
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(info, data)
    job_id = add_job(add_dataset(bad, env.data_dir), tiny_spec())
    assert run_job(job_id) == "failed"
    error = row(job_id).error
    assert "hue" in error and "abc" in error, error
    assert not error.startswith("DataError")


def test_corrupt_archive_fails_readably(env, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file")
    job_id = add_job(add_dataset(junk, env.data_dir), tiny_spec())
    assert run_job(job_id) == "failed"
    assert row(job_id).error


def test_unexpected_exception_is_type_and_message(env, dataset_id, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("engine bug (simulated)")

    monkeypatch.setattr("service.ml.train.train", boom)
    job_id = add_job(dataset_id, tiny_spec())
    assert run_job(job_id) == "failed"
    job = row(job_id)
    assert job.error == "RuntimeError: engine bug (simulated)"
    assert not Storage(env.data_dir).job_dir(job_id).exists()


def test_progress_writes_are_rate_limited(env, dataset_id, monkeypatch):
    writes: list[dict] = []
    real_write = jobs_repo.write_progress

    def counting_write(**kwargs):
        writes.append(kwargs["progress"])
        return real_write(**kwargs)

    monkeypatch.setattr(jobs_repo, "write_progress", counting_write)
    heartbeats: list[int] = []
    real_beat = jobs_repo.heartbeat
    monkeypatch.setattr(jobs_repo, "heartbeat", lambda **kw: heartbeats.append(1) or real_beat(**kw))

    def fast_epochs(spec, data, *, on_epoch, should_stop, **_kwargs):
        for epoch in range(1, 501):  # 500 epochs in ~1 s: without rate limiting, 500 writes
            on_epoch({"epoch": epoch, "val_loss": float("nan")})
            assert not should_stop()
            time.sleep(0.002)
        raise RuntimeError("stop here")

    monkeypatch.setattr("service.ml.train.train", fast_epochs)
    job_id = add_job(dataset_id, tiny_spec(epochs=500))
    assert run_job(job_id) == "failed"
    assert 1 <= len(writes) <= 3, writes  # PROGRESS_SECONDS=2: first epoch, maybe one more, the final flush
    assert writes[-1] == {"epoch": 500, "epochs": 500, "fraction": 1.0}
    assert heartbeats == []  # progress writes renew the lease; HEARTBEAT_SECONDS=10 not reached
    job = row(job_id)
    assert len(job.history) == 500 and job.history[0]["val_loss"] is None  # NaN stored as null


def test_requeued_job_resumes_from_its_checkpoint(env, dataset_id, enqueued, monkeypatch):
    from datetime import timedelta

    from service.db.tables import utcnow
    from service.ml import train as train_module

    job_id = add_job(dataset_id, tiny_spec(epochs=4))
    # attempt 1: trains two epochs, then its worker "vanishes" (checkpoint kept, row left running)
    real_train = train_module.train
    seen: list[int] = []

    def dying_train(spec, data, *, on_epoch, should_stop, **kwargs):
        def on_epoch_then_die(item):
            on_epoch(item)
            seen.append(item["epoch"])
            if item["epoch"] == 2:
                raise KeyboardInterrupt  # not an Exception: nothing marks the row, like kill -9

        return real_train(spec, data, on_epoch=on_epoch_then_die, should_stop=should_stop, **kwargs)

    monkeypatch.setattr(train_module, "train", dying_train)
    with pytest.raises(KeyboardInterrupt):
        run_job(job_id)
    assert row(job_id).status == "running" and seen == [1, 2]
    assert (Storage(env.data_dir).checkpoint_dir(job_id) / "checkpoint.pt").exists()

    with session_scope() as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=env.settings.JOB_LEASE_SECONDS + 1)
    assert reaper.reap_stale_jobs() == {"requeued": 1, "failed": 0} and enqueued == [job_id]

    seen.clear()

    def recording_train(spec, data, *, on_epoch, **kwargs):
        return real_train(spec, data, on_epoch=lambda item: (seen.append(item["epoch"]), on_epoch(item)),
                          **kwargs)

    monkeypatch.setattr(train_module, "train", recording_train)
    assert run_job(job_id) == "succeeded"
    assert seen == [3, 4]  # resumed after epoch 2
    job = row(job_id)
    assert job.attempts == 2 and [h["epoch"] for h in job.history] == [1, 2, 3, 4]
    assert len(versions()) == 1


def test_lost_lease_discards_the_result(env, dataset_id, monkeypatch):
    """The reaper requeued the job while this worker was (slowly) finishing: no version, row untouched."""
    real_finish = registry_repo.finish_succeeded

    def requeued_meanwhile(**kwargs):
        with session_scope() as session:
            session.get(Job, kwargs["job_id"]).status = "queued"
        return real_finish(**kwargs)

    monkeypatch.setattr(registry_repo, "finish_succeeded", requeued_meanwhile)
    job_id = add_job(dataset_id, tiny_spec(epochs=1))
    assert run_job(job_id) == "lease_lost"
    assert row(job_id).status == "queued" and versions() == []
    storage = Storage(env.data_dir)
    assert not (storage.root / "artifacts").exists() or not any((storage.root / "artifacts").rglob("*.json"))
    assert list(storage.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("commit_happens", [False, True])
def test_failing_commit_takes_the_artifact_out_only_if_nothing_was_committed(
        env, dataset_id, monkeypatch, commit_happens):
    """The artifact is renamed into place inside the transaction; a COMMIT that raises takes it out again,
    unless the commit went through after all (then the version and its files stay)."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    real_commit = Session.commit
    placed: list[bool] = []

    def commit(self):
        if not self.info.get("registering"):
            return real_commit(self)
        placed.append(any((env.data_dir / "artifacts").rglob("model.safetensors")))
        if commit_happens:
            real_commit(self)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    real_finish = registry_repo.finish_succeeded

    def marking_finish(**kwargs):
        kwargs["session"].info["registering"] = True
        return real_finish(**kwargs)

    monkeypatch.setattr(Session, "commit", commit)
    monkeypatch.setattr(registry_repo, "finish_succeeded", marking_finish)
    job_id = add_job(dataset_id, tiny_spec(epochs=1))
    storage = Storage(env.data_dir)
    if commit_happens:
        assert run_job(job_id) == "succeeded"
        [version] = versions()
        assert (storage.abs(version.artifact_path) / "model.safetensors").exists()
    else:
        assert run_job(job_id) == "failed"
        job = row(job_id)
        assert job.status == "failed" and "server closed the connection" in job.error
        assert versions() == []
        assert not any((storage.root / "artifacts").rglob("*.safetensors"))
    assert placed == [True]  # moved into place before the commit
    assert list(storage.tmp_dir.iterdir()) == []


def test_version_conflict_is_retried(env, dataset_id, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    real_finish = registry_repo.finish_succeeded
    calls: list[int] = []

    def conflicting_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint"))
        return real_finish(**kwargs)

    monkeypatch.setattr(registry_repo, "finish_succeeded", conflicting_once)
    job_id = add_job(dataset_id, tiny_spec(epochs=1))
    assert run_job(job_id) == "succeeded"
    assert len(calls) == 2 and [v.version for v in versions()] == [1]


def test_heartbeat_renews_the_lease_during_long_epochs(tmp_path, monkeypatch, example_zip):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'db.sqlite'}", HEARTBEAT_SECONDS="0.1")
    job_id = add_job(add_dataset(example_zip, data_dir), tiny_spec())
    beats: list = []

    def one_slow_epoch(spec, data, *, should_stop, **_kwargs):
        first = row(job_id).heartbeat_at
        time.sleep(1.0)
        beats.append((first, row(job_id).heartbeat_at))
        raise RuntimeError("done")

    monkeypatch.setattr("service.ml.train.train", one_slow_epoch)
    assert run_job(job_id) == "failed"
    [(first, later)] = beats
    assert later > first


def test_run_exceeding_max_job_seconds_fails(tmp_path, monkeypatch, example_zip):
    from service.ml.train import TrainingCancelled

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'db.sqlite'}", MAX_JOB_SECONDS="1",
             CANCEL_POLL_SECONDS="0.1")
    job_id = add_job(add_dataset(example_zip, data_dir), tiny_spec())

    def endless(spec, data, *, should_stop, **_kwargs):
        for _ in range(300):
            if should_stop():
                raise TrainingCancelled()
            time.sleep(0.05)
        raise AssertionError("never stopped")

    monkeypatch.setattr("service.ml.train.train", endless)
    assert run_job(job_id) == "failed"
    assert "HEADWISE_MAX_JOB_SECONDS=1" in row(job_id).error


@pytest.mark.gpu
def test_success_on_cuda(tmp_path, monkeypatch, example_zip):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'db.sqlite'}", TRAIN_DEVICE="cuda")
    spec = tiny_spec()
    spec["training"]["device"] = "auto"  # -> HEADWISE_TRAIN_DEVICE
    job_id = add_job(add_dataset(example_zip, data_dir), spec)
    assert run_job(job_id) == "succeeded", row(job_id).error
    assert len(versions()) == 1
