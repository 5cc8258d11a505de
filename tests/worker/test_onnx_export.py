"""The worker exports every registered version to ONNX, checked against torch on the validation images: model.onnx
is stored with its sha256 (checksums.json and the version row) and the check report in meta.json; an export that
does not reproduce torch fails the job with a clear error and registers nothing; HEADWISE_EXPORT_ONNX=false skips
the export. The Celery child preloads the engine; the parent stays torch-free (test_lifecycle)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.storage import Storage
from worker.jobs import run_job

from .conftest import add_dataset, add_job, make_env
from .test_run_job import row, tiny_spec, versions

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def example_zip(tmp_path_factory):
    from service.ml.examples import make_example_dataset

    return make_example_dataset(tmp_path_factory.mktemp("ds") / "shapes.zip", n=64, seed=1, image_size=16)


@pytest.fixture
def dataset_id(env, example_zip) -> str:
    return add_dataset(example_zip, env.data_dir)


def test_registered_version_has_a_checked_model_onnx(env, dataset_id) -> None:
    import onnxruntime

    job_id = add_job(dataset_id, tiny_spec())
    assert run_job(job_id) == "succeeded", row(job_id).error
    [version] = versions()
    artifact = Storage(env.data_dir).abs(version.artifact_path)
    data = (artifact / "model.onnx").read_bytes()
    assert version.checksums["model.onnx"] == hashlib.sha256(data).hexdigest()
    assert json.loads((artifact / "checksums.json").read_text())["model.onnx"] == version.checksums["model.onnx"]
    report = json.loads((artifact / "meta.json").read_text())["onnx"]
    assert report["images"] > 0 and report["gate_decisions_identical"] is True
    assert set(report["max_abs_diff"]) == {"category", "is_big", "size", "hue"}
    assert max(report["max_abs_diff"].values()) <= 1e-4
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["category", "is_big", "size", "hue"]


def test_a_mismatching_export_fails_the_job_clearly(env, dataset_id, monkeypatch) -> None:
    """Perturb the exported network (one head's bias): the check rejects it, the job fails naming the head."""
    import service.ml.export as export

    real = export.export_onnx

    def perturbed(spec, state_dict, normalization=None):
        state = {k: v.clone() for k, v in state_dict.items()}
        state[f"heads.{spec.task_names.index('size')}.3.bias"] += 0.01
        return real(spec, state, normalization)

    monkeypatch.setattr(export, "export_onnx", perturbed)
    job_id = add_job(dataset_id, tiny_spec())
    assert run_job(job_id) == "failed"
    error = row(job_id).error
    assert error.startswith("ExportError: ONNX export rejected on ") and "validation images" in error, error
    assert "head 'size' differs from torch by up to 0.01 (limit 0.0001)" in error, error
    assert versions() == []
    assert not list((env.data_dir / "artifacts").glob("*/*")) if (env.data_dir / "artifacts").exists() else True


def test_export_can_be_switched_off(tmp_path, monkeypatch, example_zip) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'headwise.db'}", EXPORT_ONNX="false")
    job_id = add_job(add_dataset(example_zip, env.data_dir), tiny_spec(epochs=1))
    assert run_job(job_id) == "succeeded", row(job_id).error
    [version] = versions()
    assert "model.onnx" not in version.checksums
    assert not (Storage(env.data_dir).abs(version.artifact_path) / "model.onnx").exists()


def test_child_preloads_the_engine_in_the_background(monkeypatch) -> None:
    import sys
    import threading

    from worker import app as worker_app

    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def record(self):
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", record)
    worker_app._preload_engine()
    [thread] = [t for t in started if t.name == "headwise-preload"]
    assert thread.daemon
    thread.join(120)
    assert all(name in sys.modules for name in worker_app.ENGINE_MODULES)


PRELOAD_THEN_TRAIN = """
import importlib, json, sys
from pathlib import Path
from worker.app import ENGINE_MODULES
from tests.worker.test_run_job import tiny_spec
from service.ml.examples import make_example_dataset
for name in ENGINE_MODULES:
    importlib.import_module(name)
before = set(sys.modules)
from service.ml.data import load_training_data
from service.ml.spec import parse_spec
from service.ml.train import train
out = Path(sys.argv[1])
spec, data = load_training_data(parse_spec(tiny_spec(epochs=1)), make_example_dataset(out / "d.zip", n=24,
                                                                                       image_size=16), out)
train(spec, data, device="cpu")
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_preload_covers_what_training_imports(tmp_path) -> None:
    """A job in a preloaded child imports none of TorchDynamo / Inductor after its claim:
    torch.use_deterministic_algorithms (each CPU run) imports them, 1.2 s here, which is why ENGINE_MODULES names
    torch._inductor.config. (Without it in ENGINE_MODULES this test fails.)"""
    out = subprocess.run([sys.executable, "-c", PRELOAD_THEN_TRAIN, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    late = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in late if m.startswith(("torch._dynamo", "torch._inductor"))], late
