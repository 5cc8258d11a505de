"""The memory estimator (service/ml/memory.py) against measured peaks, for several specs and backbones.

    python bench/memory_estimate.py --device cuda [--json out.json]   # torch.cuda.max_memory_allocated
    python bench/memory_estimate.py --device cpu                      # peak RSS (VmHWM) of a subprocess each
    python bench/memory_estimate.py --recompute bench/results/gpu/memory_estimate_cuda.json
        # no GPU needed: today's estimate against the peaks measured in an earlier run (what the CUDA
        # constants of service/ml/memory.py were fitted to)

One epoch of real training on random images per spec. The estimate must stay above the measured peak (it is
what job creation compares with the worker's budget) without being absurd. On CUDA the estimate includes
memory.CUDA_CONTEXT_BYTES for the context, which max_memory_allocated does not see, so both ratios are printed:
estimate / measured and (estimate - SLACK x context) / measured. Needs torch, numpy, pydantic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = [{"name": "c", "type": "multiclass", "classes": ["a", "b", "c"]}, {"name": "r", "type": "regression"}]
CASES = [  # (name, model, training, samples)
    ("headwise 64px w32 d4 b64", {"image_size": 64, "width": 32, "depth": 4}, {"batch_size": 64}, 2000),
    ("headwise 128px w64 d2 b96", {"image_size": 128, "width": 64, "depth": 2}, {"batch_size": 96}, 600),
    ("headwise 96px w48 d6 b128 sgd", {"image_size": 96, "width": 48, "depth": 6},
     {"batch_size": 128, "optimizer": "sgd"}, 600),
    ("headwise 256px w64 d2 b256", {"image_size": 256, "width": 64, "depth": 2}, {"batch_size": 256}, 600),
    ("resnet18 224px b64", {"image_size": 224, "backbone": "resnet18"}, {"batch_size": 64}, 320),
    ("mobilenet_v3_large 224px b64", {"image_size": 224, "backbone": "mobilenet_v3_large"}, {"batch_size": 64}, 320),
    ("resnet50 224px b32", {"image_size": 224, "backbone": "resnet50"}, {"batch_size": 32}, 160),
]


def spec_json(model: dict, training: dict, device: str) -> dict:
    # CUDA: bf16 autocast, as the stored H200 peaks were measured (session 2's "auto"; "auto" now trains nets under
    # precision.CUDA_BF16_MIN_PARAMS parameters fp32 there)
    prec = {"mixed_precision": "bf16"} if device == "cuda" else {}
    return {"tasks": TASKS, "model": model, "training": {**prec, **training, "epochs": 1, "device": device}}


def random_data(spec, n: int, tmp: Path):
    import numpy as np

    from service.ml.data import Labels, TrainingData

    cfg, rng = spec.model, np.random.default_rng(0)
    path = tmp / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                       shape=(n, cfg.image_size, cfg.image_size, cfg.channels))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    del images
    labels = {"c": Labels(values=rng.integers(0, 3, n).astype(np.int64), mask=np.ones(n, dtype=bool)),
              "r": Labels(values=rng.normal(size=n).astype(np.float32), mask=np.ones(n, dtype=bool))}
    return TrainingData(images=np.load(path, mmap_mode="r"), labels=labels)


def measure_cuda(data_json: dict, n: int) -> int:
    import torch

    from service.ml.spec import parse_spec
    from service.ml.train import train

    spec = parse_spec(data_json)
    with tempfile.TemporaryDirectory() as tmp:
        data = random_data(spec, n, Path(tmp))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        train(spec, data, device="cuda")
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())


def measure_cpu(data_json: dict, n: int) -> int:
    out = subprocess.run([sys.executable, "-m", "tests.guards.measure_peak", json.dumps(data_json), str(n)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--only", default="", help="comma-separated case-name prefixes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--recompute", type=Path, help="a stored result: today's estimate against its peaks")
    args = parser.parse_args()

    from service.ml import memory
    from service.ml.spec import parse_spec

    stored = {}
    if args.recompute:
        old = json.loads(args.recompute.read_text())
        args.device = old["device"]
        stored = {r["case"]: int(r["measured_mb"] * 2**20) for r in old["rows"]}
    rows, errors = [], {}
    for name, model, training, n in CASES:
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        if args.recompute and name not in stored:
            continue
        data_json = spec_json(model, training, args.device)
        est = memory.estimate(parse_spec(data_json), n, device=args.device).total
        try:
            if args.recompute:
                peak = stored[name]
            else:
                peak = measure_cuda(data_json, n) if args.device == "cuda" else measure_cpu(data_json, n)
        except Exception as exc:  # noqa: BLE001 - reported, the other cases still run
            errors[name] = repr(exc)[-500:]
            continue
        context = int(memory.SLACK * memory.CUDA_CONTEXT_BYTES) if args.device == "cuda" else 0
        rows.append({"case": name, "samples": n, "estimate_mb": round(est / 2**20, 1),
                     "measured_mb": round(peak / 2**20, 1), "estimate/measured": round(est / peak, 2),
                     "without_context/measured": round((est - context) / peak, 2), "conservative": est >= peak})
    result = {"benchmark": "memory_estimate", "device": args.device, "rows": rows, "errors": errors,
              "all_conservative": all(r["conservative"] for r in rows) and not errors}
    if args.recompute:
        result["measured_in"] = str(args.recompute)
        result["note"] = "estimates recomputed by this code; peaks as measured in that earlier run"
    elif args.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
        result["torch"] = torch.__version__
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print("\n| case | samples | estimate MB | measured MB | est/measured | (est-context)/measured |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['samples']} | {r['estimate_mb']} | {r['measured_mb']} | "
              f"{r['estimate/measured']} | {r['without_context/measured']} |")


if __name__ == "__main__":
    main()
