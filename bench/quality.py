"""Quality on real data: masked multi-task vs one single-task model per head vs zero-imputation of missing labels.

    python bench/quality.py [--json out.json] [--epochs 20] [--seed 0] [--threads 1]
    python bench/quality.py --peer [...]   # Headwise's defaults vs Keras 3 over 3 seeds: bench/quality_peer.py

Data: scikit-learn's bundled handwritten digits (`load_digits`, 1,797 real 8x8 scans), upscaled to 16x16 with the
same preprocessing as the service (`to_pixels`, bilinear). A fixed stratified 30% is held out as the test set
(fully labelled); the rest is the training pool (the trainer takes its own validation split from it).
Heads:
  digit       multiclass (10)          labelled on every training sample
  is_large    binary (digit >= 5)      labelled on every training sample
  digit_mod3  multiclass (3), SPARSE   labels removed from 85% of the training samples
  ink         regression, GATED on is_large: mean ink of the original 8x8 scan (0..16), labelled only where
              is_large is true (it is "not applicable" elsewhere)
  shape       multilabel (loop: 0 6 8 9, vertical: 1 4 7, even), labels removed from 60% of the training samples
Variants (same network config, epochs, early stopping on val_loss, seed):
  fixed, uncertainty, dwa, gradnorm, pcgrad
              one network, masked losses (missing labels and closed gates contribute nothing), each weighting
              strategy (--strategies picks a subset; "fixed" is the plain masked multi-task model)
  single      one network per head, each trained on that head's labelled samples only
  zero_impute one network, missing labels filled with 0 (class 0 / false / 0.0), every mask all ones, no gate
Metrics on the test set (metrics.py definitions). ink is scored on the test samples where is_large is truly true
("given the true gate"); e2e_rmse/gate_miss_rate let the predicted is_large decide (single: the is_large model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from bench.common import emit, machine, peak_rss_mb, table  # noqa: E402
from service.ml import metrics as M  # noqa: E402
from service.ml.data import Labels, TrainingData, to_pixels  # noqa: E402
from service.ml.inference import Predictor  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import train  # noqa: E402

SIZE = 16
TASKS = [
    {"name": "digit", "type": "multiclass", "classes": [str(d) for d in range(10)]},
    {"name": "is_large", "type": "binary"},
    {"name": "digit_mod3", "type": "multiclass", "classes": ["0", "1", "2"]},
    {"name": "ink", "type": "regression", "gate": {"task": "is_large"}},
    {"name": "shape", "type": "multilabel", "classes": ["loop", "vertical", "even"]},
]
STRATEGIES = ["fixed", "uncertainty", "dwa", "gradnorm", "pcgrad"]
PRIMARY = {"digit": "accuracy", "is_large": "accuracy", "digit_mod3": "accuracy", "ink": "rmse",
           "shape": "mean_average_precision"}
SHOWN = {
    "digit": ["accuracy", "macro_f1"],
    "is_large": ["accuracy", "roc_auc"],
    "digit_mod3": ["accuracy", "macro_f1"],
    "ink": ["rmse", "mae", "e2e_rmse", "gate_miss_rate"],
    "shape": ["micro_f1", "macro_f1", "mean_average_precision"],
}


def spec_for(tasks: list[dict], epochs: int, seed: int, strategy: str = "fixed"):
    return parse_spec(
        {
            "tasks": tasks,
            "weighting": {"strategy": strategy},
            "model": {
                "image_size": SIZE,
                "channels": 1,
                "width": 16,
                "depth": 4,
                "dropout": 0.1,
                "head_hidden": 32,
            },
            "training": {
                "epochs": epochs,
                "batch_size": 64,
                "learning_rate": 3e-3,
                "weight_decay": 1e-4,
                "val_fraction": 0.15,
                "seed": seed,
                "early_stopping": {"metric": "val_loss", "patience": 5},
            },
        }
    )


def load(seed: int):
    d = load_digits()
    scans = d.images  # (N, 8, 8) float 0..16
    images = np.stack(
        [to_pixels(PIL.Image.fromarray((s * 255 / 16).astype(np.uint8), "L"), SIZE, 1) for s in scans]
    )  # (N, 16, 16, 1) uint8
    digit = d.target.astype(np.int64)
    values = {
        "digit": digit,
        "is_large": (digit >= 5).astype(np.float32),
        "digit_mod3": digit % 3,
        "ink": scans.mean(axis=(1, 2)).astype(np.float32),
        "shape": np.stack([np.isin(digit, [0, 6, 8, 9]), np.isin(digit, [1, 4, 7]), digit % 2 == 0],
                          axis=1).astype(np.float32),
    }
    masks = {
        "digit": np.ones(len(digit), bool),
        "is_large": np.ones(len(digit), bool),
        "digit_mod3": np.ones(len(digit), bool),
        "ink": digit >= 5,
        "shape": np.ones(len(digit), bool),
    }
    train_idx, test_idx = train_test_split(
        np.arange(len(digit)), test_size=0.3, stratify=digit, random_state=seed
    )
    rng = np.random.default_rng(seed)
    train_masks = {k: v[train_idx].copy() for k, v in masks.items()}
    train_masks["digit_mod3"] &= rng.random(len(train_idx)) < 0.15  # sparse head: 85% of labels removed
    train_masks["shape"] &= rng.random(len(train_idx)) < 0.4  # multilabel head: 60% of labels removed
    return images, values, masks, train_idx, test_idx, train_masks


def data_for(names, images, values, masks, idx, zero_impute=False) -> TrainingData:
    labels = {}
    for n in names:
        v, m = values[n][idx], masks[n]
        v = np.where(m if v.ndim == 1 else m[:, None], v, 0).astype(v.dtype)
        labels[n] = Labels(v, np.ones_like(m) if zero_impute else m.copy())
    return TrainingData(images=images[idx], labels=labels)


def main() -> None:
    if "--peer" in sys.argv[1:]:  # the Keras peer column: bench/quality_peer.py (its own options)
        from bench.quality_peer import main as peer_main

        return peer_main([a for a in sys.argv[1:] if a != "--peer"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="weighting strategies to compare")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no OpenMP rendezvous stalls on a shared 2-core box)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    images, values, masks, train_idx, test_idx, train_masks = load(args.seed)
    names = [t["name"] for t in TASKS]
    full_spec = spec_for(TASKS, args.epochs, args.seed)
    test_values = {n: values[n][test_idx] for n in names}
    test_masks = {n: masks[n][test_idx] for n in names}
    test_images = images[test_idx]

    outputs: dict[str, dict] = {}
    norms: dict[str, dict] = {}
    info: dict[str, dict] = {}

    def fit(variant: str, spec, data):
        t0 = time.perf_counter()
        r = train(spec, data, device="cpu")
        info.setdefault(variant, {"seconds": 0.0, "epochs": []})
        info[variant]["seconds"] += time.perf_counter() - t0
        info[variant]["epochs"].append(len(r.history))
        return r, Predictor.from_result(r).outputs(test_images)

    strategies = [x for x in args.strategies.split(",") if x]
    for strategy in strategies:
        r, outputs[strategy] = fit(
            strategy, spec_for(TASKS, args.epochs, args.seed, strategy),
            data_for(names, images, values, train_masks, train_idx),
        )
        norms[strategy] = r.normalization

    ungated = [{k: v for k, v in t.items() if k != "gate"} for t in TASKS]
    r, outputs["zero_impute"] = fit(
        "zero_impute",
        spec_for(ungated, args.epochs, args.seed),
        data_for(names, images, values, train_masks, train_idx, zero_impute=True),
    )
    norms["zero_impute"] = r.normalization

    outputs["single"], norms["single"] = {}, {}
    for task in ungated:
        n = task["name"]
        r, out = fit(
            "single",
            spec_for([task], args.epochs, args.seed),
            data_for([n], images, values, {n: train_masks[n]}, train_idx),
        )
        outputs["single"][n] = out[n]
        norms["single"].update(r.normalization)

    variants = [*strategies, "single", "zero_impute"]
    scores = {v: M.evaluate(full_spec, outputs[v], test_values, test_masks, norms[v]) for v in variants}
    winners = {}
    for n in names:
        key = PRIMARY[n]
        vals = {v: scores[v][n][key] for v in variants}
        pick = (min if key in M.LOWER_IS_BETTER else max)(vals, key=lambda v: vals[v])
        best_strategy = (min if key in M.LOWER_IS_BETTER else max)(strategies, key=lambda v: vals[v])
        winners[n] = {"metric": key, "winner": pick, "best_strategy": best_strategy, "values": vals}
    result = {
        "benchmark": "quality",
        "data": {
            "source": "sklearn.datasets.load_digits",
            "image_size": SIZE,
            "train_pool": len(train_idx),
            "test": len(test_idx),
            "train_labelled": {n: int(train_masks[n].sum()) for n in names},
        },
        "config": {
            "epochs": args.epochs,
            "seed": args.seed,
            "model": full_spec.model.model_dump(),
            "early_stopping": "val_loss, patience 5",
        },
        "machine": machine("cpu"),
        "test_metrics": scores,
        "winners": winners,
        "train_seconds": {v: round(info[v]["seconds"], 1) for v in variants},
        "epochs_run": {v: info[v]["epochs"] for v in variants},
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit(result, args.json)
    print()
    rows = []
    for n in names:
        for key in SHOWN[n]:
            vals = [scores[v][n].get(key) for v in variants]
            w = winners[n]
            mark = f"{w['winner']} (strategies: {w['best_strategy']})" if key == PRIMARY[n] else ""
            rows.append([n, int(train_masks[n].sum()), key, *vals, mark])
    print(table(["head", "labelled", "metric", *variants, "winner (primary)"], rows))
    print(
        f"\ntest n={len(test_idx)}; training labels: "
        + ", ".join(f"{n} {int(train_masks[n].sum())}/{len(train_idx)}" for n in names)
        + f"; total {result['total_seconds']} s"
    )


if __name__ == "__main__":
    main()
