"""worker/limits.py: RLIMIT_DATA really makes an oversized allocation fail inside the process (torch and numpy),
is restored afterwards, and the failure is recognised as out-of-memory with a message naming what to change."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from service.config import Settings
from service.ml.spec import parse_spec
from worker import limits

ROOT = Path(__file__).resolve().parents[2]
MB = 1024**2

CHILD = """
import sys, resource
import numpy as np, torch
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
