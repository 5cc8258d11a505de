"""The default worker memory budget follows the cgroup limit when it is lower than the host's RAM: cgroup v2
(memory.max, at the mount root or the process's own cgroup) and v1 (memory/memory.limit_in_bytes), on fake
cgroup trees; "max" and v1's "unlimited" number mean no limit."""

from __future__ import annotations

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
