"""Quality parity of bf16 training on CPU: the multi-task model of bench/quality.py trained with
mixed_precision "none" (fp32) and "bf16", over several seeds, scored on the same held-out test set.

    python bench/precision_quality.py [--json out.json] [--seeds 0,1,2] [--epochs 20] [--threads 1]

Data, heads, network and metrics are bench/quality.py's (real scikit-learn digits, a sparse head, a gated
regression). For every seed (which also changes the train/test split) both precisions train the same spec; the
verdict per head and metric: |mean(bf16) - mean(fp32)| <= the seed-to-seed spread of fp32 (max - min over
seeds), i.e. bf16 moves the result less than changing the seed does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import emit, machine, table  # noqa: E402
from bench.quality import SHOWN, SIZE, TASKS, data_for, load  # noqa: E402
from service.ml import metrics as M  # noqa: E402
from service.ml.inference import Predictor  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import train  # noqa: E402


def spec(epochs: int, seed: int, precision: str):
    return parse_spec({
        "tasks": TASKS,
        "model": {"image_size": SIZE, "channels": 1, "width": 16, "depth": 4, "dropout": 0.1, "head_hidden": 32},
        "training": {"epochs": epochs, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 1e-4,
                     "val_fraction": 0.15, "seed": seed, "early_stopping": {"metric": "val_loss", "patience": 5},
                     "mixed_precision": precision},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [t["name"] for t in TASKS]
    precisions = ("none", "bf16")
    scores: dict[str, list[dict]] = {p: [] for p in precisions}
    seconds: dict[str, float] = {p: 0.0 for p in precisions}
    for seed in seeds:
        images, values, masks, train_idx, test_idx, train_masks = load(seed)
        data = data_for(names, images, values, train_masks, train_idx)
        for precision in precisions:
            s = spec(args.epochs, seed, precision)
            t0 = time.perf_counter()
            result = train(s, data, device="cpu")
            seconds[precision] += time.perf_counter() - t0
            out = Predictor.from_result(result).outputs(images[test_idx])
            scores[precision].append(M.evaluate(s, out, {n: values[n][test_idx] for n in names},
                                                {n: masks[n][test_idx] for n in names}, result.normalization))
    verdicts, rows = {}, []
    for n in names:
        for key in SHOWN[n]:
            per = {p: [sc[n].get(key) for sc in scores[p]] for p in precisions}
            if any(v is None for vs in per.values() for v in vs):
                continue
            mean = {p: statistics.fmean(per[p]) for p in precisions}
            spread = max(per["none"]) - min(per["none"])
            ok = abs(mean["bf16"] - mean["none"]) <= spread
            verdicts[f"{n}.{key}"] = {"fp32": per["none"], "bf16": per["bf16"], "fp32_mean": mean["none"],
                                      "bf16_mean": mean["bf16"], "fp32_seed_spread": spread, "within_spread": ok}
            rows.append([n, key, mean["none"], mean["bf16"], mean["bf16"] - mean["none"], spread,
                         "yes" if ok else "NO"])
    result = {"benchmark": "precision_quality", "seeds": seeds, "epochs": args.epochs, "machine": machine("cpu"),
              "train_seconds": {p: round(v, 1) for p, v in seconds.items()}, "metrics": verdicts,
              "all_within_spread": all(v["within_spread"] for v in verdicts.values())}
    emit(result, args.json)
    print()
    print(table(["head", "metric", "fp32 mean", "bf16 mean", "difference", "fp32 seed spread", "within"], rows))
    print(f"\nseeds {seeds}; train seconds fp32 {result['train_seconds']['none']}, bf16 "
          f"{result['train_seconds']['bf16']}; all within the seed spread: {result['all_within_spread']}")


if __name__ == "__main__":
    main()
