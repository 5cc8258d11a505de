"""The full Headwise trainer on CPU in channels_last with its small-step guard switched OFF
(precision.MIN_CPU_BATCH = 1: steps of any size, channels_last and bf16 at every batch size, no merging of a small
last batch): the configuration torch 2.13 was seen to crash in (service/ml/precision.py). Each case is one child
process under glibc's heap checks (MALLOC_CHECK_=3, MALLOC_PERTURB_), training `epochs` epochs on
steps x batch + 3 samples (so every epoch ends with a 3-sample step); exit 0 and finite losses = no crash.

    python bench/cl_crash_trainer.py --batches 1-16 --modes none,bf16 --epochs 4 --steps 16 --repeat 2 \
        --out bench/results/cl_crash_trainer.json
Prints one line per case and a JSON summary. See bench/cl_crash.py for the standalone (pure torch) sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_crash import parse_batches, parse_sweep_args, run_case, summarize  # noqa: E402


def child(batch: int, mode: str, epochs: int, steps: int, threads: int) -> None:
    import math

    import torch
    from train_throughput import _headwise_train, make_data, make_spec

    import service.ml.precision as precision
    from service.ml.spec import parse_spec

    torch.set_num_threads(threads)
    precision.MIN_CPU_BATCH = 1  # the guard off: every step in channels_last (+ bf16), whatever its size
    raw = make_spec(64, batch, epochs, False)
    raw["training"].update({"mixed_precision": mode, "early_stopping": False})
    result = _headwise_train()(parse_spec(raw), make_data(steps * batch + 3, 64), device="cpu")
    if not result.metrics["precision"]["channels_last"]:
        sys.exit(4)  # the guard was not off: this case would test nothing
    losses = [h["loss"] for e in result.history for h in e["train"].values() if h.get("loss") is not None]
    if not all(math.isfinite(v) for v in losses):
        sys.exit(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1-16")
    ap.add_argument("--modes", default="none,bf16")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16, help="full steps per epoch (plus one 3-sample step)")
    args = parse_sweep_args(ap, threads=2)
    if args.child:
        child(**json.loads(args.child))
        return
    results = []
    for batch, mode in itertools.product(parse_batches(args.batches), args.modes.split(",")):
        for _ in range(args.repeat):
            case = {"batch": batch, "mode": mode, "epochs": args.epochs, "steps": args.steps, "threads": args.threads}
            r = run_case(case, args, __file__)
            results.append(r)
            print(f"batch={batch:3d} {mode:4s} -> {'ok' if r['ok'] else 'FAIL rc=' + str(r['rc'])} ({r['seconds']} s)"
                  f" {r['stderr'] if not r['ok'] else ''}", flush=True)
    summarize(results, args.out)


if __name__ == "__main__":
    main()
