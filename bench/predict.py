"""/predict serving benchmark: Headwise (micro-batched) vs the raw network vs a naive FastAPI endpoint, in one run.

    python bench/predict.py [--json bench/results/predict.json] [--clients 32] [--seconds 20]

One command: builds the example dataset (64x64 PNG), trains a model on it through the real API and the worker's job
runner (model: image_size 64, width 32, depth 4, head_hidden 64 -- the spec example's size; 2 epochs, 512 images),
starts the real app (`uvicorn --factory service.api.app:create_app`, embedded SQLite, HEADWISE_ADMIN_KEY) on a free
port, then measures:
  (a) raw: Predictor.predict_arrays in this process on preprocessed uint8 arrays, batch 1 and batch 64, for
      the version's model.onnx in ONNX Runtime (what the server runs by default, HEADWISE_PREDICT_RUNTIME=
      onnxruntime: the targets), the eager torch network and its TorchScript trace (the torch runtime), in the
      server's kind of inference thread with its threads (HEADWISE_TORCH_THREADS: auto = CPUs - 1, 0 = all
      cores; ONNX Runtime gets the same number); measured before and after the servers
  (b) /predict, 1 client, sequential requests of one PNG (multipart `files`)
  (c) /predict, N concurrent clients (asyncio, keep-alive connections, a minimal HTTP/1.1 client on uvloop
      so that the load generator takes little of the shared CPU), one PNG per request, after a warm-up
  (c2) /v2 infer (Open Inference Protocol, one PNG as a BYTES element in binary data, binary outputs: what
      tritonclient sends by default) at 1 and N clients on the same server, right after (b) and (c); the ratios
      to /v1 are reported (issue 13's target: >= 0.9)
  (d) the naive endpoint (bench/naive_app.py: network once per request in a plain `def` route) at 1 and N clients,
      served by the same uvicorn command line
p50/p95/p99 latency, images/s, and the CPU used by the load generator (this process: getrusage / wall time) and by
the server (/proc/<pid>/stat), in cores. Targets (issue 11, vs raw ONNX Runtime in the same run): 1-client p50 <=
raw batch-1 p50 + 1.5 ms; N clients >= 0.5x raw batch-64 images/s; 0 errors (also reported: N clients vs naive,
and the ratios against the eager and traced torch network). Prints JSON, then a table. HEADWISE_PREDICT_* /
HEADWISE_TORCH_THREADS / HEADWISE_EXPORT_ONNX in the environment are passed to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import emit, machine, table  # noqa: E402
from bench.harness import (  # noqa: E402
    auth,
    example_pngs,
    headwise_env,
    migrate,
    start_headwise,
    start_server,
    train_model,
)

PASS_THROUGH = ("HEADWISE_PREDICT_MAX_BATCH", "HEADWISE_PREDICT_MAX_WAIT_MS", "HEADWISE_PREDICT_MAX_QUEUE",
                "HEADWISE_TORCH_THREADS", "HEADWISE_PREDICT_DEVICE", "HEADWISE_PREDICT_TRACE", "HEADWISE_LOG_FORMAT",
                "HEADWISE_PREDICT_RUNTIME", "HEADWISE_EXPORT_ONNX")
VARIANTS = ("onnxruntime", "eager", "traced")


def stats_ms(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def multipart(image: bytes, index: int) -> tuple[bytes, str]:
    boundary = "headwisebench7d41a9"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="img{index}.png"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---- (a) raw network -----------------------------------------------------------------------------------

def raw_forward(predictor, arrays: np.ndarray, batch: int, seconds: float, max_iters: int) -> dict:
    n = len(arrays)
    for i in range(3):  # warm-up
        predictor.predict_arrays(arrays[(i * batch) % n:][:batch] if batch < n else arrays[:batch])
    times = []
    deadline = time.perf_counter() + seconds
    cpu0 = time.thread_time()
    i = 0
    while i < max_iters and (time.perf_counter() < deadline or i < 5):
        start = (i * batch) % n
        x = arrays[start:start + batch] if start + batch <= n else np.concatenate([arrays[start:], arrays[:batch - (n - start)]])
        t = time.perf_counter()
        predictor.predict_arrays(x)
        times.append(time.perf_counter() - t)
        i += 1
    return {"batch": batch, "iterations": len(times), **stats_ms(times),
            "images_per_second": batch * len(times) / sum(times),
            "cpu_ms_per_call": (time.thread_time() - cpu0) * 1000 / len(times)}  # this thread's CPU: noise-robust


def raw_runs(predictors: dict, arrays: np.ndarray, seconds: float) -> dict:
    """Batch 1 and batch 64 for each predictor variant, in the same kind of thread the server runs the network
    in: service.serving.batcher's single inference thread, torch threads from HEADWISE_TORCH_THREADS (on a busy 2-core
    machine torch's 2-thread pool in the main thread can be several times slower at batch 1 than this)."""
    from service.serving.inference_thread import run_in_inference_thread as run

    out: dict = {"torch_threads": run(torch_threads)}
    for name, predictor in predictors.items():
        out[name] = {"batch_1": run(raw_forward, predictor, arrays, 1, seconds, 2000),
                     "batch_64": run(raw_forward, predictor, arrays, 64, seconds, 200)}
    return out


def serving_threads() -> int:
    """The intra-op threads the server gives its runtime (Settings.TORCH_THREADS; 0 = every core)."""
    from service.config import get_settings
    from service.serving.batcher import BatcherConfig

    return BatcherConfig.from_settings(get_settings()).torch_threads or os.cpu_count() or 1


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ---- (b-d) HTTP load -----------------------------------------------------------------------------------

class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (pre-built request bytes, Content-Length
    responses): a load generator that costs the shared CPU little (httpx spends milliseconds per request)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        length = int(lower[at + 17:lower.find(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_requests(url: str, headers: dict, bodies: list[tuple[bytes, str]]) -> tuple[str, int, list[bytes]]:
    u = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    out = []
    for body, ctype in bodies:
        head = (f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n{extra}Content-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return u.hostname, u.port, out


async def drive(url: str, headers: dict, bodies: list[tuple[bytes, str]], clients: int, seconds: float,
                max_requests: int, warmup_seconds: float, server_pid: int | None) -> dict:
    from bench.harness import cpu_seconds

    host, port, requests = build_requests(url, headers, bodies)
    conns = [Connection(host, port) for _ in range(clients)]
    latencies: list[float] = []
    errors: Counter = Counter()
    sent = [0]

    async def worker(i: int, deadline: float, record: bool) -> None:
        k = i
        while time.perf_counter() < deadline and (not record or sent[0] < max_requests):
            if record:
                sent[0] += 1
            data = requests[k % len(requests)]
            k += clients
            t = time.perf_counter()
            try:
                status, _ = await conns[i].request(data)
            except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
                conns[i].close()
                status = type(exc).__name__
            if record:
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[str(status)] += 1

    if warmup_seconds > 0:
        end = time.perf_counter() + warmup_seconds
        await asyncio.gather(*(worker(i, end, False) for i in range(clients)))
    cpu0, srv0, t0 = cpu_self(), cpu_seconds(server_pid) if server_pid else None, time.perf_counter()
    end = t0 + seconds
    await asyncio.gather(*(worker(i, end, True) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    cpu1, srv1 = cpu_self(), cpu_seconds(server_pid) if server_pid else None
    for c in conns:
        c.close()
    return {"clients": clients, "requests": len(latencies), "errors": dict(errors), "seconds": elapsed,
            **stats_ms(latencies), "images_per_second": len(latencies) / elapsed,
            "client_cpu_cores": (cpu1 - cpu0) / elapsed,
            "server_cpu_cores": (srv1 - srv0) / elapsed if server_pid else None,
            "server_cpu_ms_per_request": (srv1 - srv0) * 1000 / max(1, len(latencies)) if server_pid else None}


def run_loop(coro):
    """uvloop for the load generator when installed (cheaper per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def http_runs(url: str, headers: dict, bodies, server_pid: int, args) -> dict:
    def run(clients, seconds, max_requests, warmup):
        return run_loop(drive(url, headers, bodies, clients, seconds, max_requests, warmup, server_pid))

    run(1, 2.0, 10, 0.0)  # warm: model load, connections
    single = run(1, args.seconds, args.seq_requests, 0.0)
    many = run(args.clients, args.seconds, 10**9, args.warmup)
    return {"1": single, str(args.clients): many}


# ---- main ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the JSON result here")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="time bound per HTTP measurement")
    p.add_argument("--seq-requests", type=int, default=400, help="request bound for the 1-client runs")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before the concurrent runs")
    p.add_argument("--raw-seconds", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=512, help="example dataset size for the quick training")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="headwise-bench-predict-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    extra = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env = headwise_env(work / "data", **extra)
    load_start = os.getloadavg()
    migrate(env)

    from bench.harness import bench_spec
    from service.ml.data import open_image
    from service.ml.inference import Predictor
    from service.serving.runtimes import load_predictor

    out: dict = {"benchmark": "predict", "settings": {**extra, "clients": args.clients,
                                                      "seconds": args.seconds}}
    server = start_headwise(env, work / "logs")
    try:
        trained = train_model(server, env, work, n=args.samples, spec=bench_spec(epochs=args.epochs))
        out["model"] = {k: trained[k] for k in ("model", "version", "seconds")} | {"config": trained["spec"]["model"]}
        pngs = example_pngs(trained["dataset_zip"], 64)
        bodies = [multipart(png, i) for i, png in enumerate(pngs)]
        predictors = {"onnxruntime": load_predictor(trained["artifact_dir"], runtime="onnxruntime",
                                                    threads=serving_threads()),
                      "eager": Predictor.load(trained["artifact_dir"], device="cpu"),
                      "traced": Predictor.load(trained["artifact_dir"], device="cpu").optimize_for_serving()}
        out["model"]["raw_onnxruntime_runtime"] = predictors["onnxruntime"].runtime_name  # torch: no model.onnx
        arrays = predictors["eager"].preprocess([open_image(png, f"img{i}") for i, png in enumerate(pngs)])
        raw_before = raw_runs(predictors, arrays, args.raw_seconds)
        url = f"{server.url}/v1/models/{trained['model']}/predict"
        out["headwise"] = http_runs(url, auth(), bodies, server.pid, args)
        from bench.v2_infer import v2_bodies  # (bench.v2_infer imports this module)

        v2_url = f"{server.url}/v2/models/{trained['model']}/infer"  # same server, model and images, right after
        out["headwise_v2"] = http_runs(v2_url, auth(), v2_bodies(pngs), server.pid, args)
        out["headwise"]["server_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        server.stop()
    naive_env = {**env, "NAIVE_ARTIFACT": trained["artifact_dir"]}
    with start_server("naive", "bench.naive_app:app", naive_env, work / "logs") as naive:
        out["naive"] = http_runs(f"{naive.url}/predict", {}, bodies, naive.pid, args)
        out["naive"]["server_peak_rss_mb"] = naive.peak_rss_mb()
    raw_after = raw_runs(predictors, arrays, args.raw_seconds)
    out["raw"] = {"before": raw_before, "after": raw_after}
    out["machine"] = machine("cpu") | {"load_average_at_start": load_start, "load_average_at_end": os.getloadavg()}
    out["targets"] = targets(out, args.clients)
    emit(out, args.json)
    print()
    print(render(out, args.clients))
    tmp.cleanup()
    return 0


def targets(out: dict, clients: int) -> dict:
    """Issue 11's targets against raw ONNX Runtime (what the server runs); ratios against the eager torch network
    and its trace are reported too. Raw figures: the mean of the runs before and after the servers."""
    raw = out["raw"]
    one, many_run = out["headwise"]["1"], out["headwise"][str(clients)]
    single, many = one["p50_ms"], many_run["images_per_second"]
    naive = out["naive"][str(clients)]["images_per_second"]
    errors = sum(one["errors"].values()) + sum(many_run["errors"].values())
    res = {"single_client_p50_ms": single, "concurrent_images_per_second": many, "errors": errors,
           "errors_ok": errors == 0, "concurrent_vs_naive": many / naive}
    for variant in VARIANTS:
        b1 = float(np.mean([raw[k][variant]["batch_1"]["p50_ms"] for k in ("before", "after")]))
        b64 = float(np.mean([raw[k][variant]["batch_64"]["images_per_second"] for k in ("before", "after")]))
        suffix = "" if variant == "onnxruntime" else f"_{variant}"
        res |= {f"raw_batch_1_p50_ms{suffix}": b1, f"raw_batch_64_images_per_second{suffix}": b64,
                f"single_client_overhead_ms{suffix}": single - b1,
                f"concurrent_vs_raw_batch_64{suffix}": many / b64}
    raw_cpu = float(np.mean([raw[k]["onnxruntime"]["batch_1"]["cpu_ms_per_call"] for k in ("before", "after")]))
    res |= {"raw_batch_1_cpu_ms": raw_cpu, "single_client_server_cpu_ms": one["server_cpu_ms_per_request"],
            "single_client_cpu_overhead_ms": one["server_cpu_ms_per_request"] - raw_cpu}
    v2 = out.get("headwise_v2")
    if v2 is not None:  # issue 13: /v2 infer not slower than /v1 predict by more than 10%
        res |= {"v2_single_client_vs_v1": v2["1"]["images_per_second"] / one["images_per_second"],
                "v2_concurrent_vs_v1": v2[str(clients)]["images_per_second"] / many,
                "v2_errors": sum(v2["1"]["errors"].values()) + sum(v2[str(clients)]["errors"].values())}
        res["v2_ok"] = bool(min(res["v2_single_client_vs_v1"], res["v2_concurrent_vs_v1"]) >= 0.9
                            and res["v2_errors"] == 0)
    res |= {"single_client_ok": bool(single <= res["raw_batch_1_p50_ms"] + 1.5),
            "concurrent_vs_raw_ok": bool(many >= 0.5 * res["raw_batch_64_images_per_second"])}
    return res


def render(out: dict, clients: int) -> str:
    rows = []
    for when in ("before", "after"):
        for variant in VARIANTS:
            for key in ("batch_1", "batch_64"):
                r = out["raw"][when][variant][key]
                rows.append([f"raw {variant}, {key.replace('_', ' ')} ({when})", "-", r["iterations"],
                             r["p50_ms"], r["p95_ms"], r["p99_ms"], r["images_per_second"], "-", "-"])
    labels = {"headwise": "/predict (Headwise)", "headwise_v2": "/v2 infer (Headwise, binary as tritonclient)",
              "naive": "naive FastAPI endpoint (eager torch)"}
    for name in [n for n in labels if n in out]:
        for c in ("1", str(clients)):
            r = out[name][c]
            label = labels[name]
            rows.append([label, c, r["requests"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["images_per_second"],
                         r["client_cpu_cores"], r["server_cpu_cores"]])
    t = out["targets"]
    lines = [table(["variant", "clients", "n", "p50 ms", "p95 ms", "p99 ms", "images/s", "client CPU (cores)",
                    "server CPU (cores)"], rows), ""]
    ok = lambda flag: "met" if flag else "MISSED"  # noqa: E731
    lines.append(f"1 client: p50 {t['single_client_p50_ms']:.2f} ms vs raw ONNX Runtime batch-1 p50 "
                 f"{t['raw_batch_1_p50_ms']:.2f} ms + 1.5 ms -> overhead {t['single_client_overhead_ms']:.2f} ms "
                 f"({ok(t['single_client_ok'])}); raw eager batch-1 {t['raw_batch_1_p50_ms_eager']:.2f} ms, "
                 f"traced {t['raw_batch_1_p50_ms_traced']:.2f} ms")
    lines.append(f"1 client, CPU time (robust to a busy machine): the server spent "
                 f"{t['single_client_server_cpu_ms']:.2f} ms CPU per request (all threads, HTTP included) vs "
                 f"{t['raw_batch_1_cpu_ms']:.2f} ms per raw ONNX Runtime batch-1 call -> "
                 f"{t['single_client_cpu_overhead_ms']:.2f} ms CPU overhead")
    lines.append(f"{clients} clients: {t['concurrent_images_per_second']:.0f} images/s = "
                 f"{t['concurrent_vs_raw_batch_64']:.2f}x raw ONNX Runtime batch-64 (target >= 0.5: "
                 f"{ok(t['concurrent_vs_raw_ok'])}); {t['concurrent_vs_raw_batch_64_eager']:.2f}x raw eager batch-64;"
                 f" {t['concurrent_vs_naive']:.2f}x naive; errors {t['errors']} ({ok(t['errors_ok'])})")
    if "v2_ok" in t:
        lines.append(f"/v2 infer vs /v1 predict, images/s: 1 client {t['v2_single_client_vs_v1']:.2f}x, {clients} "
                     f"clients {t['v2_concurrent_vs_v1']:.2f}x (target >= 0.9: {ok(t['v2_ok'])}; measured one after "
                     "the other: bench/v2_infer.py alternates rounds for a finer comparison)")
    lines.append(f"runtime threads (server and raw runs): {out['raw']['before']['torch_threads']}; raw onnxruntime "
                 f"variant ran on: {out['model'].get('raw_onnxruntime_runtime')}")
    m = out["machine"]
    lines.append(f"load average (1/5/15 min) at start {tuple(round(x, 2) for x in m['load_average_at_start'])}, "
                 f"at end {tuple(round(x, 2) for x in m['load_average_at_end'])}; {m['cpu_count']} CPUs")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
