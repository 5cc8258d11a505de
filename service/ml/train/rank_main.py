"""One rank of a training job on several processes:

    torchrun --standalone --nproc-per-node N -m service.ml.train.rank_main REQUEST.json

(the worker runs it as `python -m torch.distributed.run ...`, torchrun's own module; worker/ranks.py).
REQUEST.json: {"spec": <job spec>, "data": <dataset file>, "cache_dir", "checkpoint_dir", "weights_dir" (or null),
"device": "cpu" | "cuda", "init": <warm start file> (or null), "events": <jsonl path>, "result": <path>}.
Every rank loads the dataset (the image cache the worker built is shared) and joins the process group (NCCL on
CUDA, rank r on cuda:<local rank>; gloo on the CPU). Rank 0 alone writes: the checkpoints (train()), one JSON
line per epoch / step to `events` (the worker reports them), and the TrainResult (result_dict, torch.save,
atomically) to `result`. A rank whose parent (torchrun) dies is killed (PR_SET_PDEATHSIG), so no orphan keeps
training after its worker is gone.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from service.ml.data import load_training_data
from service.ml.distributed import init_from_env, leave, world_from_env
from service.ml.spec import parse_spec
from service.ml.train.state import TrainResult, atomic_save
from service.ml.train.trainer import train

STEP_EVERY_SECONDS = 0.5  # step events are rate-limited (the worker's monitor rate-limits its writes again)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: this process gets `sig` when its parent exits (best effort elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


def _clean(value):
    """JSON-safe: non-finite floats -> None (the worker's monitor does the same for the database)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class Events:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self.last_step = 0.0

    def _write(self, kind: str, item: dict) -> None:
        self.file.write(json.dumps({"kind": kind, "item": _clean(item)}) + "\n")
        self.file.flush()

    def epoch(self, item: dict) -> None:
        self._write("epoch", item)

    def step(self, item: dict) -> None:
        now = time.monotonic()
        if now - self.last_step >= STEP_EVERY_SECONDS or item.get("step") == item.get("steps"):
            self.last_step = now
            self._write("step", item)


def result_dict(result: TrainResult) -> dict:
    """The TrainResult as plain data (the spec as JSON: its head/loss configs are built per process)."""
    return {**vars(result), "spec": result.spec.to_json_dict()}


def load_result(path: Path) -> TrainResult:
    """Rank 0's result file (written by this module, read by the worker that started torchrun)."""
    raw = torch.load(path, map_location="cpu", weights_only=False)
    return TrainResult(**{**raw, "spec": parse_spec(raw["spec"])})


def load_init(path: str | None) -> tuple | None:
    """training.init_from for the ranks: (parent spec, parent state dict, source), saved by the worker."""
    if not path:
        return None
    raw = torch.load(path, map_location="cpu", weights_only=False)
    return parse_spec(raw["spec"]), raw["state_dict"], raw["source"]


def main(request_path: str) -> int:
    die_with_parent()
    req = json.loads(Path(request_path).read_text(encoding="utf-8"))
    local = world_from_env()
    device = f"cuda:{local.local_rank}" if req["device"] == "cuda" else "cpu"
    world = init_from_env(device)
    spec, data = load_training_data(parse_spec(req["spec"]), Path(req["data"]), Path(req["cache_dir"]))
    events = Events(Path(req["events"])) if world.is_main else None
    result = train(spec, data, device=device, world=world, checkpoint_dir=req["checkpoint_dir"],
                   weights_dir=req.get("weights_dir"), on_epoch=events.epoch if events else None,
                   on_step=events.step if events else None, init=load_init(req.get("init")))
    if world.is_main:
        atomic_save(result_dict(result), Path(req["result"]))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    try:
        code = main(sys.argv[1])
    except Exception:  # noqa: BLE001 - printed for the worker's log tail (worker/ranks.py), then a failed rank
        traceback.print_exc()
        code = 1
    leave(code)  # not sys.exit: gloo can abort a process during interpreter shutdown (service/ml/distributed.py)
