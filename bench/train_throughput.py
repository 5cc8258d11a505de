"""Training throughput: the Headwise trainer vs a minimal hand-written PyTorch loop, alternating in one run.

    python bench/train_throughput.py [--json out.json] [--rounds 5] [--samples 512] [--device auto]

Both variants train the same MultiTaskCNN (default model config: width 32, depth 4) on the same in-memory uint8
tensors (512 samples by default, 64x64x3, batch 64; 4 tasks: multiclass, sparse binary, gated regression, very
sparse regression) with AdamW. The trainer is timed end to end (`train()` call: setup, split, shuffling, masks, per-head counts, checkpoint-
free, val_fraction 0); the bare loop likewise includes building its model and optimizer. Rounds alternate AB BA..;
short runs and the ratio of adjacent runs keep the comparison fair on a machine shared with other work.
On CUDA both use bf16 autocast, channels_last and device-resident data (what a careful hand-written loop does).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import emit, machine, median, peak_rss_mb, table  # noqa: E402
from service.ml.data import Labels, TrainingData  # noqa: E402
from service.ml.network import MultiTaskCNN  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import train  # noqa: E402


def make_spec(size: int, batch: int, epochs: int, compile_: bool) -> dict:
    return {
        "tasks": [
            {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
            {"name": "is_big", "type": "binary"},
            {
                "name": "size",
                "type": "regression",
                "gate": {"task": "category", "classes": ["circle", "square"]},
            },
            {"name": "hue", "type": "regression"},
        ],
        "weighting": {"strategy": "fixed"},
        "model": {"image_size": size, "channels": 3},
        "training": {
            "epochs": epochs,
            "batch_size": batch,
            "val_fraction": 0.0,
            "schedule": "none",
            "weight_decay": 1e-4,
            "compile": compile_,
        },
    }


def make_data(n: int, size: int, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 3, n)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return TrainingData(
        images=images,
        labels={
            "category": Labels(cat.astype(np.int64), np.ones(n, bool)),
            "is_big": Labels((rng.random(n) < 0.5).astype(np.float32), rng.random(n) < 0.7),
            "size": Labels(rng.normal(10, 3, n).astype(np.float32) * (cat > 0), cat > 0),
            "hue": Labels(rng.random(n).astype(np.float32), rng.random(n) < 0.15),
        },
    )


def bare_loop(
    spec, data: TrainingData, device: torch.device, epochs: int, seed: int, compile_: bool = False
) -> None:
    """What a user would write by hand: masked losses summed, backward, AdamW step."""
    cuda = device.type == "cuda"
    torch.manual_seed(seed)
    model = MultiTaskCNN(spec).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=cuda or None)
    images = torch.from_numpy(data.images).to(device)
    lab = data.labels
    cat, cat_m = (
        torch.from_numpy(lab["category"].values).to(device),
        torch.from_numpy(lab["category"].mask).to(device),
    )
    big, big_m = (
        torch.from_numpy(lab["is_big"].values).to(device),
        torch.from_numpy(lab["is_big"].mask).to(device),
    )
    size_m = torch.from_numpy(lab["size"].mask).to(device) & (cat > 0)
    size = torch.from_numpy((lab["size"].values - 10.0) / 3.0).to(device)
    hue, hue_m = torch.from_numpy(lab["hue"].values).to(device), torch.from_numpy(lab["hue"].mask).to(device)
    n, bs = len(images), spec.training.batch_size
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = forward(x)
            m1, m2, m3, m4 = cat_m[idx], big_m[idx], size_m[idx], hue_m[idx]
            loss = (
                F.cross_entropy(out["category"].float(), cat[idx], reduction="none") * m1
            ).sum() / m1.sum().clamp(min=1)
            loss = loss + (
                F.binary_cross_entropy_with_logits(out["is_big"].float(), big[idx], reduction="none") * m2
            ).sum() / m2.sum().clamp(min=1)
            loss = loss + (((out["size"].float() - size[idx]) ** 2) * m3).sum() / m3.sum().clamp(min=1)
            loss = loss + (((out["hue"].float() - hue[idx]) ** 2) * m4).sum() / m4.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if cuda:
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument(
        "--compile", action="store_true", help="training.compile for the trainer (and compile the bare loop)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    spec = parse_spec(make_spec(args.size, args.batch, args.epochs, args.compile))
    data = make_data(args.samples, args.size)
    samples = args.samples * args.epochs

    def timed(fn) -> tuple[float, float]:
        """(samples per wall second, samples per CPU second of this process)."""
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return samples / (time.perf_counter() - t0), samples / max(time.process_time() - c0, 1e-9)

    variants = {
        "headwise": lambda d=data: train(spec, d, device=device.type),
        "bare": lambda d=data: bare_loop(spec, d, device, args.epochs, 0, args.compile),
    }
    warm = make_data(4 * args.batch, args.size, seed=1)
    for fn in variants.values():  # warm-up (allocator, kernels, one-time init, compilation), not timed
        fn(warm)
    rates: dict[str, list[float]] = {"headwise": [], "bare": []}
    cpu_rates: dict[str, list[float]] = {"headwise": [], "bare": []}
    pair_ratios = []
    for r in range(args.rounds):  # ABBA ...: alternate which variant goes first
        names = ["headwise", "bare"] if r % 2 == 0 else ["bare", "headwise"]
        for name in names:
            wall, cpu = timed(variants[name])
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
        pair_ratios.append(rates["headwise"][-1] / rates["bare"][-1])
    med = {k: median(v) for k, v in rates.items()}
    result = {
        "benchmark": "train_throughput",
        "config": {
            "samples": args.samples,
            "image_size": args.size,
            "batch_size": args.batch,
            "epochs": args.epochs,
            "rounds": args.rounds,
            "model": spec.model.model_dump(),
            "tasks": len(spec.tasks),
            "compile": args.compile,
            "mixed_precision": "bf16" if device.type == "cuda" else "none",
        },
        "machine": machine(device.type),
        "samples_per_second": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "median_samples_per_second": {k: round(v, 2) for k, v in med.items()},
        "ratio_headwise_to_bare": round(med["headwise"] / med["bare"], 4),
        "median_ratio_of_adjacent_runs": round(median(pair_ratios), 4),
        "median_samples_per_cpu_second": {k: round(median(v), 2) for k, v in cpu_rates.items()},
        "ratio_per_cpu_second": round(median(cpu_rates["headwise"]) / median(cpu_rates["bare"]), 4),
        "target_ratio": 0.95,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "dataset_mb": round(data.images.nbytes / 2**20, 1),
    }
    if device.type == "cuda":
        result["gpu_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    emit(result, args.json)
    print()
    rows = [
        [k, med[k], min(rates[k]), max(rates[k]), result["median_samples_per_cpu_second"][k]]
        for k in ("headwise", "bare")
    ]
    print(table(["variant", "median samples/s", "min", "max", "samples/CPU-s"], rows))
    print(
        f"\nratio headwise/bare: medians {result['ratio_headwise_to_bare']:.3f}, adjacent pairs "
        f"{result['median_ratio_of_adjacent_runs']:.3f}, per CPU-second {result['ratio_per_cpu_second']:.3f} "
        f"(target >= 0.95); device {device}; peak RSS {result['peak_rss_mb']} MiB; "
        f"torch threads {torch.get_num_threads()}; load average {result['machine']['load_average_1m']}"
    )


if __name__ == "__main__":
    main()
