"""Backbones at 224x224: training and inference throughput, Headwise vs a bare PyTorch loop, in one run.

    python bench/backbones.py [--archs resnet18,mobilenet_v3_large] [--size 224] [--batch 16] [--steps 4]
                              [--rounds 3] [--threads 2] [--device auto] [--json out.json]

Per architecture, alternating rounds (AB, BA, ...) after an untimed warm-up:
  train/headwise   `train()` end to end (model.backbone=ARCH, 2 tasks: multiclass + sparse regression,
                   mixed_precision "bf16", memory format from service/ml/precision.py, val_fraction 0, 1 epoch
                   of batch*steps samples, no checkpoints)
  train/bare       the best hand-written loop: the same trunk + two linear heads, bf16 autocast, AdamW, masked
                   losses summed, channels_last (weights and input); includes building its model and optimiser
  infer/headwise   Predictor.outputs(uint8 batch) on the trained result (what /predict runs after decoding)
  infer/bare       trunk + heads under inference_mode, channels_last (forward only), bf16 autocast
  infer/bare-fp32  the same in fp32 (what bf16 buys)
  infer/headwise-bf16 (CPU) Predictor.outputs with bf16=True: what HEADWISE_PREDICT_RUNTIME=torch-bf16 serves
Samples/s are medians over rounds; ratios are headwise/bare medians. On a shared machine the figures are noisy:
the JSON records the load average.
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
from torch import nn  # noqa: E402

from bench.common import emit, machine, median, peak_rss_mb, table  # noqa: E402
from service.ml.backbones import BACKBONES, build_trunk  # noqa: E402


def make_spec(arch: str, size: int, batch: int) -> dict:
    return {
        "tasks": [{"name": "kind", "type": "multiclass", "classes": ["a", "b", "c", "d"]},
                  {"name": "score", "type": "regression"}],
        "model": {"backbone": arch, "image_size": size, "channels": 3},
        "training": {"epochs": 1, "batch_size": batch, "val_fraction": 0.0, "schedule": "none",
                     "mixed_precision": "bf16"},
    }


def make_data(n: int, size: int, seed: int = 0):
    from service.ml.data import Labels, TrainingData

    rng = np.random.default_rng(seed)
    return TrainingData(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels={"kind": Labels(rng.integers(0, 4, n).astype(np.int64), np.ones(n, bool)),
                "score": Labels(rng.normal(0, 1, n).astype(np.float32), rng.random(n) < 0.15)},
    )


class Bare(nn.Module):
    def __init__(self, arch: str):
        super().__init__()
        self.trunk = build_trunk(arch)
        dim = BACKBONES[arch].feature_dim
        self.kind, self.score = nn.Linear(dim, 4), nn.Linear(dim, 1)
        mean, std = BACKBONES[arch].mean, BACKBONES[arch].std
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        z = self.trunk((x - self.mean) / self.std)
        return self.kind(z), self.score(z)[:, 0]


def bare_train(arch: str, data, batch: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = Bare(arch).to(device).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=device.type == "cuda" or None)
    images = torch.from_numpy(data.images).to(device)
    kind = torch.from_numpy(data.labels["kind"].values).to(device)
    score = torch.from_numpy(data.labels["score"].values).to(device)
    smask = torch.from_numpy(data.labels["score"].mask).to(device)
    perm = torch.randperm(len(images), device=device)
    for s in range(0, len(images), batch):
        idx = perm[s:s + batch]
        x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)  # channels_last strides
        with torch.autocast(device.type, dtype=torch.bfloat16):
            k, r = model(x)
        m = smask[idx]
        loss = F.cross_entropy(k.float(), kind[idx]) + (((r.float() - score[idx]) ** 2) * m).sum() / m.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bare_infer(model: nn.Module, images: np.ndarray, device: torch.device, bf16: bool) -> None:
    with torch.inference_mode():
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            k, r = model(x)
        k.float().cpu(), r.float().cpu()


def run_arch(arch: str, args, device: torch.device) -> dict:
    from service.ml.inference import Predictor
    from service.ml.spec import parse_spec
    from service.ml.train import train

    n = args.batch * args.steps
    spec = parse_spec(make_spec(arch, args.size, args.batch))
    data, warm = make_data(n, args.size), make_data(2 * args.batch, args.size, seed=1)
    result = train(spec, warm, device=device.type)
    predictor = Predictor.from_result(result, device=device.type)
    eval_net = Bare(arch).to(device).to(memory_format=torch.channels_last).eval()
    images = data.images[: args.batch]
    variants = {
        "train/headwise": (n, lambda: train(spec, data, device=device.type)),
        "train/bare": (n, lambda: bare_train(arch, data, args.batch, device)),
        "infer/headwise": (len(images), lambda: predictor.outputs(images)),
        "infer/bare": (len(images), lambda: bare_infer(eval_net, images, device, True)),
        "infer/bare-fp32": (len(images), lambda: bare_infer(eval_net, images, device, False)),
    }
    if device.type == "cpu":  # the torch-bf16 serving runtime (on CUDA the Predictor is bf16 already)
        bf16 = Predictor(result.spec, result.state_dict, result.normalization, device="cpu", bf16=True)
        variants["infer/headwise-bf16"] = (len(images), lambda: bf16.outputs(images))
    bare_train(arch, warm, args.batch, device)
    for _, fn in variants.values():
        if fn is not variants["train/headwise"][1]:
            fn()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            count, fn = variants[name]
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(count / (time.perf_counter() - t0))
    med = {k: median(v) for k, v in rates.items()}
    return {
        "samples_per_second": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "median_samples_per_second": {k: round(v, 2) for k, v in med.items()},
        "ratio_train_headwise_to_bare": round(med["train/headwise"] / med["train/bare"], 3),
        "ratio_infer_headwise_to_bare_bf16": round(med["infer/headwise"] / med["infer/bare"], 3),
        "ratio_infer_bf16_to_fp32": round(med["infer/bare"] / med["infer/bare-fp32"], 3),
        **({"ratio_infer_headwise_bf16_to_bare_bf16": round(med["infer/headwise-bf16"] / med["infer/bare"], 3),
            "ratio_infer_headwise_bf16_to_headwise": round(med["infer/headwise-bf16"] / med["infer/headwise"], 3)}
           if "infer/headwise-bf16" in med else {}),
        "predictor_precision": "bf16" if device.type == "cuda" else "fp32 (TorchScript trace on CPU)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet18,mobilenet_v3_large")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="training steps per timed run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    archs = args.archs.split(",")
    result = {"benchmark": "backbones", "config": {k: v for k, v in vars(args).items() if k != "json"},
              "machine": machine(device.type), "archs": {a: run_arch(a, args, device) for a in archs},
              "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        result["gpu_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    emit(result, args.json)
    rows = [[a, k, v, min(r["samples_per_second"][k]), max(r["samples_per_second"][k])]
            for a, r in result["archs"].items() for k, v in r["median_samples_per_second"].items()]
    print()
    print(table(["arch", "variant", "median samples/s", "min", "max"], rows))
    for a, r in result["archs"].items():
        print(f"{a}: train headwise/bare {r['ratio_train_headwise_to_bare']}, infer headwise/bare(bf16) "
              f"{r['ratio_infer_headwise_to_bare_bf16']}, bare bf16/fp32 {r['ratio_infer_bf16_to_fp32']}"
              + (f", torch-bf16 Predictor/bare bf16 {r['ratio_infer_headwise_bf16_to_bare_bf16']} "
                 f"(x{r['ratio_infer_headwise_bf16_to_headwise']} the fp32 Predictor)"
                 if "ratio_infer_headwise_bf16_to_bare_bf16" in r else ""))
    print(f"device {device}; {args.size}x{args.size}; load average {result['machine']['load_average_1m']}")


if __name__ == "__main__":
    main()
