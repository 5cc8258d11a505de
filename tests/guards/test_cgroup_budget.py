"""The default worker memory budget follows the cgroup limit when it is lower than the host's RAM: cgroup v2
(memory.max, at the mount root or the process's own cgroup) and v1 (memory/memory.limit_in_bytes), on fake
cgroup trees; "max" and v1's "unlimited" number mean no limit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from service import config
from service.config import Settings, cgroup_memory_limit, host_memory_bytes

GIB = 1024**3


def fake_host(tmp: Path, ram: int, self_cgroup: str) -> tuple[str, str, str]:
    (tmp / "meminfo").write_text(f"MemTotal:       {ram // 1024} kB\nMemFree:        1024 kB\n")
    (tmp / "self_cgroup").write_text(self_cgroup)
    root = tmp / "cgroup"
    root.mkdir()
    return str(tmp / "meminfo"), str(root), str(tmp / "self_cgroup")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cgroup_v2_limit_at_the_root_and_at_the_own_path(tmp_path: Path):
    meminfo, root, own = fake_host(tmp_path, 64 * GIB, "0::/jobs/worker-1\n")
    assert cgroup_memory_limit(root, own) is None and host_memory_bytes(meminfo, root, own) == 64 * GIB
    write(Path(root) / "memory.max", "max")  # a container's root: no limit
    write(Path(root) / "jobs/worker-1/memory.max", str(6 * GIB))
    assert cgroup_memory_limit(root, own) == 6 * GIB
    assert host_memory_bytes(meminfo, root, own) == 6 * GIB
    write(Path(root) / "memory.max", str(4 * GIB))  # the lowest limit wins
    assert host_memory_bytes(meminfo, root, own) == 4 * GIB
    write(Path(root) / "memory.max", str(128 * GIB))  # higher than the RAM: the RAM
    write(Path(root) / "jobs/worker-1/memory.max", "max")
    assert host_memory_bytes(meminfo, root, own) == 64 * GIB


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path: Path):
    meminfo, root, own = fake_host(tmp_path, 32 * GIB, "4:memory:/docker/abc\n3:cpuset:/\n0::/\n")
    write(Path(root) / "memory/memory.limit_in_bytes", "9223372036854771712")  # v1's "unlimited"
    assert host_memory_bytes(meminfo, root, own) == 32 * GIB
    write(Path(root) / "memory/docker/abc/memory.limit_in_bytes", str(3 * GIB))
    assert host_memory_bytes(meminfo, root, own) == 3 * GIB


def test_the_default_budget_is_60_percent_of_the_lower_of_ram_and_cgroup(tmp_path: Path, monkeypatch):
    meminfo, root, own = fake_host(tmp_path, 64 * GIB, "0::/w\n")
    write(Path(root) / "w/memory.max", str(10 * GIB))
    real = config.host_memory_bytes
    monkeypatch.setattr(config, "host_memory_bytes", lambda: real(meminfo, root, own))
    monkeypatch.delenv("HEADWISE_WORKER_MEMORY_BYTES", raising=False)
    assert Settings().WORKER_MEMORY_BYTES == int(0.6 * 10 * GIB)
    assert Settings(WORKER_MEMORY_BYTES=2 * GIB).WORKER_MEMORY_BYTES == 2 * GIB  # an explicit budget stays


def fake_smi(stdout: str, returncode: int = 0, calls: list | None = None):
    def run(cmd, **_kw):
        if calls is not None:
            calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")

    return run


def test_a_cuda_worker_s_default_budget_follows_its_gpu(monkeypatch):
    from worker import limits

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234,GPU-5678")
    calls: list = []
    h200 = fake_smi("143771\n", calls=calls)  # MiB, as nvidia-smi prints memory.total
    auto = Settings(TRAIN_DEVICE="cuda")
    assert auto.worker_memory_auto
    assert limits.resolve_worker_budget(auto, h200) == int(0.9 * 143771 * 1024**2)
    assert calls[0][-2:] == ["-i", "GPU-1234"]  # the first visible GPU
    either = Settings(TRAIN_DEVICE="auto")  # may train on the CPU: the host default
    assert limits.resolve_worker_budget(either, h200) == either.WORKER_MEMORY_BYTES
    explicit = Settings(TRAIN_DEVICE="cuda", WORKER_MEMORY_BYTES=40 * GIB)
    assert not explicit.worker_memory_auto and limits.resolve_worker_budget(explicit, h200) == 40 * GIB
    cpu = Settings(TRAIN_DEVICE="cpu")
    assert limits.resolve_worker_budget(cpu, h200) == cpu.WORKER_MEMORY_BYTES  # a CPU worker: the host default
    no_gpu = fake_smi("", returncode=9)
    assert limits.resolve_worker_budget(auto, no_gpu) == auto.WORKER_MEMORY_BYTES
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: nvidia-smi is not even asked
    calls.clear()
    assert limits.resolve_worker_budget(auto, h200) == auto.WORKER_MEMORY_BYTES and calls == []


def test_the_worker_exports_its_resolved_budget_before_the_pool_forks(monkeypatch):
    """worker_init: the resolved budget becomes HEADWISE_WORKER_MEMORY_BYTES, which the forked children (claim,
    hard limit, out-of-memory message) and the registry read."""
    from service.config import get_settings
    from worker import app, limits, presence

    monkeypatch.delenv("HEADWISE_WORKER_MEMORY_BYTES", raising=False)
    monkeypatch.delenv(presence.WORKER_ID_ENV, raising=False)
    monkeypatch.setenv("HEADWISE_TRAIN_DEVICE", "cuda")
    monkeypatch.setattr(presence, "_own_id", None)
    monkeypatch.setattr(limits, "gpu_memory_bytes", lambda run=None: 10 * GIB)
    get_settings.cache_clear()
    try:
        app._name_worker(sender=None)
        assert get_settings().WORKER_MEMORY_BYTES == int(0.9 * 10 * GIB)
        assert os.environ["HEADWISE_WORKER_MEMORY_BYTES"] == str(int(0.9 * 10 * GIB))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
