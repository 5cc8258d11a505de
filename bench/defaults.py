"""Training defaults, old vs new, on the digits task of bench/quality.py and on the example dataset.

    python bench/defaults.py [--json bench/results/defaults.json] [--seeds 0,1,2] [--threads 1] [--only digits|example]

old: what a spec that names no schedule got before: `epochs` 20, no warm-up, no early stopping (best epoch on
     val_loss kept, as always).                          -> training {"epochs": 20, "warmup_epochs": 0,
                                                            "early_stopping": false}
new: today's defaults: epochs "auto" (dataset size; the 60-minute budget does not bind here), one epoch of linear
     warm-up, early stopping on val_loss with patience 5, best epoch kept.  -> nothing set
Everything else is the benchmark's own spec (digits: bench/quality.py spec_for, fixed weighting; example:
service.ml.examples.example_spec). Digits are scored on quality.py's held-out test set (30%), the example on its
validation split (the trainer's own). Per head: the mean over seeds and the spread (max - min); the verdict per head
is "no worse" when new >= old - spread (lower-is-better metrics mirrored), plus epochs run and training seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import quality as Q  # noqa: E402
from bench.common import emit, machine, table  # noqa: E402
from service.ml import metrics as M  # noqa: E402
from service.ml.inference import Predictor  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import train  # noqa: E402

OLD = {"epochs": 20, "warmup_epochs": 0, "early_stopping": False}
DEFAULTS = {"old": OLD, "new": {}}
EXAMPLE_PRIMARY = {"category": "accuracy", "is_big": "accuracy", "size": "rmse", "hue": "rmse"}


def training_defaults(raw: dict, which: str) -> dict:
    """raw spec with the schedule settings taken out, then `which` defaults applied."""
    tc = {k: v for k, v in raw["training"].items() if k not in ("epochs", "warmup_epochs", "early_stopping")}
    return {**raw, "training": {**tc, **DEFAULTS[which]}}


def digits_run(which: str, seed: int) -> dict:
    images, values, masks, train_idx, test_idx, train_masks = Q.load(seed)
    names = [t["name"] for t in Q.TASKS]
    raw = Q.spec_for(Q.TASKS, 20, seed).to_json_dict()
    spec = parse_spec(training_defaults(raw, which))
    t0 = time.perf_counter()
    r = train(spec, Q.data_for(names, images, values, train_masks, train_idx), device="cpu")
    seconds = time.perf_counter() - t0
    out = Predictor.from_result(r).outputs(images[test_idx])
    scores = M.evaluate(spec, out, {n: values[n][test_idx] for n in names}, {n: masks[n][test_idx] for n in names},
                        r.normalization)
    return {"scores": {n: scores[n][Q.PRIMARY[n]] for n in names}, "epochs": len(r.history),
            "best_epoch": r.best_epoch, "seconds": round(seconds, 1)}


def example_run(which: str, seed: int, workdir: Path) -> dict:
    from service.ml.data import load_training_data
    from service.ml.examples import DEFAULT_N, example_spec, make_example_dataset

    path = make_example_dataset(workdir / "example.npz", n=DEFAULT_N, seed=0)
    raw = example_spec()
    raw["training"]["seed"] = seed
    spec, data = load_training_data(parse_spec(training_defaults(raw, which)), path, workdir / "cache")
    t0 = time.perf_counter()
    r = train(spec, data, device="cpu")
    seconds = time.perf_counter() - t0
    tasks = r.metrics["tasks"]
    return {"scores": {n: tasks[n].get(k) for n, k in EXAMPLE_PRIMARY.items()}, "epochs": len(r.history),
            "best_epoch": r.best_epoch, "seconds": round(seconds, 1)}


def summarise(runs: dict[str, list[dict]], primary: dict[str, str]) -> list[dict]:
    rows = []
    for head, metric in primary.items():
        vals = {w: [r["scores"][head] for r in runs[w]] for w in DEFAULTS}
        mean = {w: float(np.mean(v)) for w, v in vals.items()}
        spread = max(max(v) - min(v) for v in vals.values())
        lower = metric in M.LOWER_IS_BETTER
        diff = (mean["old"] - mean["new"]) if lower else (mean["new"] - mean["old"])  # + = new better
        rows.append({"head": head, "metric": metric, "old": mean["old"], "new": mean["new"], "spread": spread,
                     "new_minus_old": diff, "verdict": "no worse" if diff >= -spread else "worse",
                     "values": vals})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["digits", "example"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict = {"benchmark": "defaults", "defaults": {"old": OLD, "new": "(nothing set)"}, "seeds": seeds,
                    "machine": machine("cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {"digits": (lambda w, s: digits_run(w, s), Q.PRIMARY),
                "example": (lambda w, s: example_run(w, s, Path(tmp)), EXAMPLE_PRIMARY)}
        for name, (run, primary) in jobs.items():
            if args.only and name != args.only:
                continue
            runs = {w: [run(w, s) for s in seeds] for w in DEFAULTS}
            result[name] = {"heads": summarise(runs, primary),
                            "epochs": {w: [r["epochs"] for r in runs[w]] for w in DEFAULTS},
                            "best_epoch": {w: [r["best_epoch"] for r in runs[w]] for w in DEFAULTS},
                            "train_seconds": {w: [r["seconds"] for r in runs[w]] for w in DEFAULTS}}
    emit(result, args.json)
    for name in ("digits", "example"):
        if name in result:
            r = result[name]
            print(f"\n{name}: epochs old {r['epochs']['old']} new {r['epochs']['new']}; train s old "
                  f"{r['train_seconds']['old']} new {r['train_seconds']['new']}")
            print(table(["head", "metric", "old", "new", "spread", "new - old (+ better)", "verdict"],
                        [[h["head"], h["metric"], h["old"], h["new"], h["spread"], h["new_minus_old"], h["verdict"]]
                         for h in r["heads"]]))


if __name__ == "__main__":
    main()
