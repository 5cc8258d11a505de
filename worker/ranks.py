"""training.devices > 1: the job's training runs as N processes under torchrun, started here as a subprocess.

Celery's pool processes are daemonic and cannot start children of their own with multiprocessing, so the job's
process runs `python -m torch.distributed.run --standalone --nproc-per-node N -m service.ml.train.rank_main
REQUEST.json` (torchrun, its own module) and stays the job's supervisor:
- it reports rank 0's epoch and step events (a JSON-lines file rank 0 appends to) through the usual monitor, so
  heartbeats, progress, SSE, checkpoint upload to object storage and the history work as for one process;
- cancel, timeout and a lost lease (monitor.should_stop) end torchrun (SIGTERM, which it passes to its ranks; then
  SIGKILL), and TrainingCancelled is raised as for one process: the last complete epoch's checkpoint stays;
- torchrun gets SIGTERM when this process dies (PR_SET_PDEATHSIG) and every rank gets SIGKILL when torchrun dies,
  so a killed worker leaves no training behind;
- a rank that dies makes torchrun stop the others and exit non-zero: RanksFailed. The job is then released for
  another attempt (worker/jobs.py), which resumes from rank 0's last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("headwise.worker")

POLL_SECONDS = 0.2
TERM_GRACE_SECONDS = 20.0
LOG_TAIL_CHARS = 1500


class RanksFailed(Exception):
    """A training process exited abnormally (the attempt failed; the job may resume on the next one)."""


def processes_for(spec: Any, device_type: str) -> int:
    """training.devices on this worker (ValueError naming the field when it has fewer devices); "auto" takes at
    most batch_size / 2 processes (2 samples each)."""
    from service.ml.distributed import resolve_devices

    if spec.training.devices == 1:
        return 1
    n = resolve_devices(spec.training.devices, device_type, available_devices(device_type))
    return max(1, min(n, spec.training.batch_size // 2)) if spec.training.devices == "auto" else n


def save_init(init: tuple | None, job_dir: Path) -> str | None:
    """The warm start (training.init_from) for the ranks, saved next to the job (rank_main.load_init reads it)."""
    if init is None:
        return None
    import torch

    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "ranks-init.pt"
    torch.save({"spec": init[0].to_json_dict(), "state_dict": init[1], "source": init[2]}, path)
    return str(path)


def available_devices(device_type: str) -> int:
    """CUDA devices this worker sees, or its usable CPU cores."""
    if device_type == "cuda":
        import torch

        return torch.cuda.device_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# torchrun is exec'ed by a tiny launcher that first asks for SIGTERM when this process (its parent) dies
# (PR_SET_PDEATHSIG survives execve); no preexec_fn: this process has threads (the monitor).
LAUNCH = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, int(signal.SIGTERM)); "
          "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


def command(processes: int, request: Path) -> list[str]:
    return [sys.executable, "-c", LAUNCH, str(os.getpid()), "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(processes), "-m", "service.ml.train.rank_main", str(request)]


def train_ranks(processes: int, request: dict[str, Any], workdir: Path, *,
                on_epoch: Callable[[dict], None], on_step: Callable[[dict], None],
                should_stop: Callable[[], bool]) -> Any:
    """Run the job's training as `processes` ranks; returns rank 0's TrainResult."""
    from service.ml.train import TrainingCancelled

    workdir.mkdir(parents=True, exist_ok=True)
    req_path, events, result = workdir / "ranks-request.json", workdir / "ranks-events.jsonl", workdir / "ranks-result.pt"
    events.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    events.touch()
    req_path.write_text(json.dumps({**request, "events": str(events), "result": str(result)}), encoding="utf-8")
    out = workdir / "ranks.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(out, "wb") as logf:
        proc = subprocess.Popen(command(processes, req_path), stdout=logf, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    log.info("training on %d processes: torchrun pid %d", processes, proc.pid)
    offset = 0
    try:
        while True:
            offset = _pump(events, offset, on_epoch, on_step)
            rc = proc.poll()
            if rc is not None:
                offset = _pump(events, offset, on_epoch, on_step)
                break
            if should_stop():
                _stop(proc)
                raise TrainingCancelled("training stopped (all processes ended)")
            time.sleep(POLL_SECONDS)
    except BaseException:
        _stop(proc)
        raise
    if rc != 0 or not result.exists():
        raise RanksFailed(f"a training process failed (torchrun exit status {rc}); last output: "
                          f"{_tail(out)}")
    from service.ml.train.rank_main import load_result

    return load_result(result)


def _pump(path: Path, offset: int, on_epoch, on_step) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return offset
    for line in chunk[: end + 1].splitlines():
        event = json.loads(line)
        (on_epoch if event["kind"] == "epoch" else on_step)(event["item"])
    return offset + end + 1


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun (it stops its ranks), SIGKILL to its process group after the grace period."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks die with it (PR_SET_PDEATHSIG)
        proc.wait()


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return " | ".join((errors or lines)[-6:])[-LOG_TAIL_CHARS:]
