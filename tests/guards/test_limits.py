"""worker/limits.py: RLIMIT_DATA really makes an oversized allocation fail inside the process (torch and numpy),
is restored afterwards, and the failure is recognised as out-of-memory with a message naming what to change."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings
from service.ml.spec import parse_spec
from worker import limits

ROOT = Path(__file__).resolve().parents[2]
MB = 1024**2

CHILD = """
import sys, resource
import numpy as np, torch
import pytest

from service.config import Settings
from worker import limits
before = resource.getrlimit(resource.RLIMIT_DATA)
with limits.host_memory_limit(Settings(WORKER_MEMORY_BYTES=int(sys.argv[1]))):
    for make in (lambda: torch.empty(2 * 1024**3, dtype=torch.uint8).fill_(1),
                 lambda: np.ones(2 * 1024**3, dtype=np.uint8)):
        try:
            make()
            print("allocated")
        except BaseException as exc:
            print("oom" if limits.is_out_of_memory(exc) else f"other {type(exc).__name__}: {exc}")
print("restored", resource.getrlimit(resource.RLIMIT_DATA) == before)
"""


def test_rlimit_data_fails_big_allocations_in_process_and_is_restored():
    out = subprocess.run([sys.executable, "-c", CHILD, str(900 * MB)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["oom", "oom", "restored", "True"], out.stdout


def test_limit_is_restored_in_this_process_too():
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with limits.host_memory_limit(Settings(WORKER_MEMORY_BYTES=64 * 1024**3)) as limit:
        assert resource.getrlimit(resource.RLIMIT_DATA)[0] == limit
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_oom_message_names_the_setting_and_a_batch_size_that_fits():
    spec = parse_spec({"tasks": [{"name": "c", "type": "binary"}],
                       "model": {"image_size": 128, "width": 64, "depth": 2}, "training": {"batch_size": 128}})
    settings = Settings(WORKER_MEMORY_BYTES=700 * MB)
    text = limits.oom_message(spec, 160, settings, "cpu", "RuntimeError: can't allocate memory")
    assert text.startswith("out of memory: training ran out of host memory under the worker's limit of 700.0 MiB "
                           f"(HEADWISE_WORKER_MEMORY_BYTES={700 * MB}); lower training.batch_size to ")
    suggested = int(text.split("lower training.batch_size to ")[1].split()[0])
    assert 1 <= suggested <= 64  # at most half of what failed
    assert text.endswith("[RuntimeError: can't allocate memory]")
    assert limits.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert limits.is_out_of_memory(MemoryError())
    assert not limits.is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_cuda_out_of_memory_is_recognised_and_named():
    import torch

    exc = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.8 GiB total)")
    assert limits.is_out_of_memory(exc)
    spec = parse_spec({"tasks": [{"name": "c", "type": "binary"}],
                       "model": {"image_size": 128, "width": 64, "depth": 2}, "training": {"batch_size": 128}})
    text = limits.oom_message(spec, 160, Settings(WORKER_MEMORY_BYTES=900 * MB), "cuda", f"OutOfMemoryError: {exc}")
    assert text.startswith("out of memory: training ran out of GPU memory under the worker's limit of 900.0 MiB")
    assert "lower training.batch_size to " in text or "lower model.image_size" in text


@pytest.mark.gpu
def test_cuda_training_over_the_allocator_limit_fails_once_with_the_oom_message(tmp_path, monkeypatch):
    """On a GPU (skipped without one): the CUDA allocator's fraction is the hard limit; a job whose row carries
    no estimate (so any worker claims it) and needs more fails at once, attempts 1, naming the setting."""
    from service.db.base import session_scope
    from service.db.tables import Job
    from service.ml.examples import make_example_dataset
    from tests.worker.conftest import add_dataset, add_job, make_env
    from worker.jobs import run_job

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # 4 GiB: room for this (in-process) test's host memory while the data loads; the step below peaked at
    # 5.8 GB on an H200 (bench/results/gpu/memory_estimate_cuda.json, "headwise 256px w64 d2 b256")
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'db.sqlite'}", TRAIN_DEVICE="cuda",
             WORKER_MEMORY_BYTES=str(4096 * MB))
    archive = make_example_dataset(tmp_path / "shapes.zip", n=320, seed=1, image_size=64)
    spec = {"tasks": [{"name": "category", "type": "multiclass"}], "model": {"image_size": 256, "width": 64,
                                                                              "depth": 2},
            "training": {"epochs": 1, "batch_size": 256, "device": "cuda", "val_fraction": 0.2}}
    job_id = add_job(add_dataset(archive, data_dir), spec)
    assert run_job(job_id) == "failed"
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.attempts == 1 and job.status == "failed"
        assert job.error.startswith("out of memory: training ran out of GPU memory"), job.error
        assert f"HEADWISE_WORKER_MEMORY_BYTES={4096 * MB}" in job.error
