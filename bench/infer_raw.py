"""Raw inference of the MultiTaskCNN (no HTTP, no decoding): batch-1 latency and batch-64 throughput per runtime.

    python bench/infer_raw.py [--device cpu|cuda] [--json out.json] [--seconds 3] [--threads 0] [--compile]

Random weights (speed does not depend on them), image_size 64, width 32, depth 4, 4 tasks, input uint8 NHWC
as the service feeds it. Variants, alternating in rounds:
  CPU:  eager_fp32 (torch, what /predict ran with HEADWISE_PREDICT_RUNTIME=torch), onnxruntime (the default
        serving runtime; needs onnx + onnxruntime)
  CUDA: eager_fp32, eager_bf16_cl (bf16 autocast + channels_last, what the CUDA Predictor runs),
        compiled_bf16_cl (--compile: torch.compile of the latter)
Each: p50/p95 ms at batch 1 and images/s at batch 64 (CUDA timings synchronise). Needs only torch, numpy and
pydantic (plus onnx/onnxruntime for the CPU ONNX variant), so it runs on a bare GPU host with PYTHONPATH=.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine, median, table  # noqa: E402
from bench.train_throughput import make_spec  # noqa: E402
from service.ml.network import MultiTaskCNN  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402


def torch_runner(model, device: torch.device, bf16: bool, channels_last: bool, compile_: bool):
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_ else model
    cuda = device.type == "cuda"

    @torch.inference_mode()
    def run(batch: np.ndarray):
        x = torch.from_numpy(batch)
        if cuda:
            x = x.pin_memory().to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if not channels_last:
            x = x.contiguous()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = fwd(x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}  # copies back: synchronises on CUDA

    return run


def onnx_runner(spec, model, threads: int):
    from service.ml.export import OnnxRunner, export_onnx

    return OnnxRunner(export_onnx(spec, model.state_dict()), spec.task_names, threads=threads)


def measure(run, batch1: np.ndarray, batch64: np.ndarray, seconds: float) -> dict:
    lat = []
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end or len(lat) < 20:
        t0 = time.perf_counter()
        run(batch1)
        lat.append(time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2 or n < 5:
        run(batch64)
        n += 1
    a = np.asarray(lat) * 1000
    return {"batch1_p50_ms": float(np.percentile(a, 50)), "batch1_p95_ms": float(np.percentile(a, 95)),
            "batch64_images_per_s": n * len(batch64) / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json")
    ap.add_argument("--seconds", type=float, default=3.0, help="per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ORT (0: all cores)")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    spec = parse_spec(make_spec(64, 64, 1, False))
    torch.manual_seed(0)
    model = MultiTaskCNN(spec).eval()
    rng = np.random.default_rng(0)
    batch1 = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    batch64 = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    makers = {"eager_fp32": lambda: torch_runner(MultiTaskCNN(spec).eval(), device, False, False, False)}
    if device.type == "cpu":
        makers["onnxruntime"] = lambda: onnx_runner(spec, model, threads)
    else:
        makers["eager_bf16_cl"] = lambda: torch_runner(MultiTaskCNN(spec).eval(), device, True, True, False)
        if args.compile:
            makers["compiled_bf16_cl"] = lambda: torch_runner(MultiTaskCNN(spec).eval(), device, True, True, True)
    runners, errors = {}, {}
    for name, make in makers.items():
        try:
            runners[name] = make()
            for b in (batch1, batch64, batch1):  # warm-up (and compilation)
                runners[name](b)
        except Exception as exc:  # noqa: BLE001 - e.g. no onnxruntime, no triton: report, keep the rest
            errors[name] = f"{type(exc).__name__}: {exc}"
            runners.pop(name, None)
    runs: dict[str, list[dict]] = {k: [] for k in runners}
    for r in range(args.rounds):
        order = list(runners)[r % max(1, len(runners)):] + list(runners)[: r % max(1, len(runners))]
        for name in order:
            runs[name].append(measure(runners[name], batch1, batch64, args.seconds))
    summary = {k: {m: round(median([x[m] for x in v]), 3) for m in v[0]} for k, v in runs.items() if v}
    result = {"benchmark": "infer_raw", "machine": machine(device.type), "threads": threads,
              "config": {"image_size": 64, "model": spec.model.model_dump(), "tasks": len(spec.tasks)},
              "median": summary, "runs": runs, "errors": errors}
    emit(result, args.json)
    print()
    print(table(["runtime", "batch-1 p50 ms", "batch-1 p95 ms", "batch-64 img/s"],
                [[k, v["batch1_p50_ms"], v["batch1_p95_ms"], v["batch64_images_per_s"]] for k, v in summary.items()]))
    if errors:
        print(f"errors: {errors}")


if __name__ == "__main__":
    main()
