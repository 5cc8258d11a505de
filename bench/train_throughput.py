"""Training throughput: the Headwise trainer vs a bare fp32 NCHW loop AND vs the best bare loop of this machine,
alternating in one run.

    python bench/train_throughput.py [--json out.json] [--rounds 5] [--samples 512] [--device auto|cpu|cuda]
                                     [--compile] [--variants headwise,bare_fp32,bare_best]

Every variant trains the same MultiTaskCNN (default model config: width 32, depth 4) on the same in-memory uint8
tensors (512 samples by default, 64x64x3, batch 64; 4 tasks: multiclass, sparse binary, gated regression, very
sparse regression) with AdamW, timed end to end (building the model and optimiser included):
  headwise   `train()` (setup, split, shuffling, masks, per-head counts; no checkpoint, val_fraction 0), with the
             spec's default mixed_precision "auto" (service/ml/precision.py decides bf16 and channels_last)
  bare_fp32  a hand-written loop (forward, masked losses summed, backward, AdamW step), fp32, NCHW parameters
  bare_best  the same loop with the best settings for this device: channels_last, plus bf16 autocast when the
             device computes bf16 natively (avx512_bf16/AMX CPU, or a bf16 GPU)
  bare_best_compiled (--compile) bare_best under torch.compile; with --compile the trainer gets training.compile
Rounds rotate the variants' order after an untimed warm-up (which also absorbs compilation). The JSON has every
run, medians, the median ratios of runs in the same round, and the targets (CPU: headwise >= 2.0x bare_fp32 and
>= 0.9x bare_best). Needs only torch, numpy, pydantic (and safetensors via the engine) -- no PIL -- so it runs
on a bare GPU host with PYTHONPATH=. (see bench/gpu.sh).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import emit, machine, median, peak_rss_mb, table  # noqa: E402
from service.ml.network import MultiTaskCNN  # noqa: E402
from service.ml.precision import choose_precision  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402

TARGETS = {"headwise/bare_fp32": 2.0, "headwise/bare_best": 0.9}  # on this project's 2-core CPU


@dataclass
class _Labels:  # the trainer reads .values/.mask (service.ml.data.Labels); no PIL needed on a bare GPU host
    values: np.ndarray
    mask: np.ndarray


@dataclass
class _Data:
    images: np.ndarray
    labels: dict


def make_spec(size: int, batch: int, epochs: int, compile_: bool) -> dict:
    return {
        "tasks": [
            {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
            {"name": "is_big", "type": "binary"},
            {"name": "size", "type": "regression", "gate": {"task": "category", "classes": ["circle", "square"]}},
            {"name": "hue", "type": "regression"},
        ],
        "weighting": {"strategy": "fixed"},
        "model": {"image_size": size, "channels": 3},
        "training": {"epochs": epochs, "batch_size": batch, "val_fraction": 0.0, "schedule": "none",
                     "weight_decay": 1e-4, "compile": compile_},
    }


def make_data(n: int, size: int, seed: int = 0) -> _Data:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 3, n)
    return _Data(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels={
            "category": _Labels(cat.astype(np.int64), np.ones(n, bool)),
            "is_big": _Labels((rng.random(n) < 0.5).astype(np.float32), rng.random(n) < 0.7),
            "size": _Labels(rng.normal(10, 3, n).astype(np.float32) * (cat > 0), cat > 0),
            "hue": _Labels(rng.random(n).astype(np.float32), rng.random(n) < 0.15),
        },
    )


def bare_loop(spec, data: _Data, device: torch.device, epochs: int, *, bf16: bool, channels_last: bool,
              compile_: bool = False) -> None:
    """What a user would write by hand: masked losses summed, backward, AdamW step."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = MultiTaskCNN(spec).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=cuda or None)
    images = torch.from_numpy(data.images).to(device)
    lab = {k: (torch.from_numpy(v.values).to(device), torch.from_numpy(v.mask).to(device))
           for k, v in data.labels.items()}
    (cat, cat_m), (big, big_m), (size, size_m), (hue, hue_m) = (lab[k] for k in ("category", "is_big", "size", "hue"))
    size, size_m = (size - 10.0) / 3.0, size_m & (cat > 0)
    n, bs = len(images), spec.training.batch_size
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)  # NHWC strides (free channels_last input)
            if not channels_last:
                x = x.contiguous()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = forward(x)
            m1, m2, m3, m4 = cat_m[idx], big_m[idx], size_m[idx], hue_m[idx]
            loss = (F.cross_entropy(out["category"].float(), cat[idx], reduction="none") * m1).sum() / m1.sum().clamp(min=1)
            loss = loss + (F.binary_cross_entropy_with_logits(out["is_big"].float(), big[idx], reduction="none")
                           * m2).sum() / m2.sum().clamp(min=1)
            loss = loss + (((out["size"].float() - size[idx]) ** 2) * m3).sum() / m3.sum().clamp(min=1)
            loss = loss + (((out["hue"].float() - hue[idx]) ** 2) * m4).sum() / m4.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if cuda:
        torch.cuda.synchronize()


def _headwise_train():
    from service.ml.train import train  # the engine trainer: service/ml/train.py or the train/ package

    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, all cores)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="add bare_best_compiled; the trainer gets compile too")
    ap.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    spec = parse_spec(make_spec(args.size, args.batch, args.epochs, args.compile))
    data = make_data(args.samples, args.size)
    samples = args.samples * args.epochs
    best = choose_precision("auto", device)  # bf16 where native (what the trainer's "auto" picks)
    # The best bare loop always uses channels_last (set here, not taken from the trainer's own decision).
    best_cl = device.type in ("cpu", "cuda")

    def timed(fn) -> tuple[float, float]:
        """(samples per wall second, samples per CPU second of this process)."""
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return samples / (time.perf_counter() - t0), samples / max(time.process_time() - c0, 1e-9)

    variants = {
        "headwise": lambda d=data: _headwise_train()(spec, d, device=device.type),
        "bare_fp32": lambda d=data: bare_loop(spec, d, device, args.epochs, bf16=False, channels_last=False),
        "bare_best": lambda d=data: bare_loop(spec, d, device, args.epochs, bf16=best.bf16,
                                              channels_last=best_cl),
    }
    if args.compile:
        variants["bare_best_compiled"] = lambda d=data: bare_loop(
            spec, d, device, args.epochs, bf16=best.bf16, channels_last=best_cl, compile_=True)
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    errors: dict[str, str] = {}
    warm = make_data(4 * args.batch, args.size, seed=1)
    for name, fn in list(variants.items()):  # warm-up (allocator, kernels, one-time init, compilation)
        try:
            fn(warm)
        except Exception as exc:  # noqa: BLE001 - e.g. the trainer cannot import on a bare host: report it
            errors[name] = f"{type(exc).__name__}: {exc}"
            del variants[name]
    names = list(variants)
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpu_rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):  # rotate which variant goes first
        for name in names[r % max(1, len(names)):] + names[: r % max(1, len(names))]:
            wall, cpu = timed(variants[name])
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
    med = {k: median(v) for k, v in rates.items()}
    ratios = {}
    for other in [n for n in names if n != "headwise"] if "headwise" in names else []:
        ratios[f"headwise/{other}"] = {
            "of_medians": round(med["headwise"] / med[other], 4),
            "median_same_round": round(median([a / b for a, b in zip(rates["headwise"], rates[other], strict=True)]), 4),
        }
    result = {
        "benchmark": "train_throughput",
        "config": {"samples": args.samples, "image_size": args.size, "batch_size": args.batch, "epochs": args.epochs,
                   "rounds": args.rounds, "model": spec.model.model_dump(), "tasks": len(spec.tasks),
                   "compile": args.compile, "mixed_precision": spec.training.mixed_precision},
        "machine": machine(device.type),
        "best_settings": best.describe() | {"bare_best_channels_last": best_cl},
        "samples_per_second": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "median_samples_per_second": {k: round(v, 2) for k, v in med.items()},
        "median_samples_per_cpu_second": {k: round(median(v), 2) for k, v in cpu_rates.items()},
        "ratios": ratios,
        "targets": TARGETS if device.type == "cpu" else {},
        "errors": errors,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "dataset_mb": round(data.images.nbytes / 2**20, 1),
    }
    if device.type == "cuda":
        result["gpu_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    emit(result, args.json)
    print()
    rows = [[k, med[k], min(rates[k]), max(rates[k]), result["median_samples_per_cpu_second"][k]] for k in names]
    print(table(["variant", "median samples/s", "min", "max", "samples/CPU-s"], rows))
    for key, r in ratios.items():
        target = result["targets"].get(key)
        print(f"{key}: same-round median {r['median_same_round']:.3f}, of medians {r['of_medians']:.3f}"
              + (f" (target >= {target})" if target else ""))
    print(f"device {device}; best settings {best.dtype}, channels_last {best_cl}; torch threads "
          f"{torch.get_num_threads()}; load average {result['machine']['load_average_1m']}"
          + (f"; errors: {errors}" if errors else ""))


if __name__ == "__main__":
    main()
