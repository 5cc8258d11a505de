"""/v2 infer (Open Inference Protocol, binary tensor data as tritonclient sends it) next to /v1 predict, in one run.

    python bench/v2_infer.py [--json bench/results/v2_infer.json] [--clients 32] [--seconds 10] [--rounds 2]

Trains the bench model (bench/harness.py), starts the real app, then alternates, `--rounds` times: /v1 predict
(multipart, one PNG) and /v2 infer (one PNG as a BYTES element in binary data, every output returned binary), at 1
client and at N clients, with bench/predict.py's load generator. Reports medians over the rounds and the ratio
v2/v1 (target: V2 not slower than /v1 by more than 10%: images/s ratio >= 0.9, p50 ratio <= 1.1). The raw
network is measured by bench/predict.py; both paths here run the same micro-batcher, so the difference is the
protocol's HTTP layer only.

`v2_bodies(pngs)` is the hook for bench/predict.py: request bodies for its `drive()`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, machine, table  # noqa: E402
from bench.harness import auth, bench_spec, example_pngs, headwise_env, migrate, start_headwise, train_model  # noqa: E402
from bench.predict import PASS_THROUGH, drive, multipart, run_loop  # noqa: E402


def v2_bodies(pngs: list[bytes]) -> list[tuple[bytes, str]]:
    """One-image /v2 infer requests as tritonclient sends them by default (binary input, binary outputs), as
    (body, content type) for bench.predict.drive. drive() writes raw HTTP/1.1, so the per-request
    Inference-Header-Content-Length header rides in the content-type slot as one more header line."""
    out = []
    for png in pngs:
        blob = struct.pack("<I", len(png)) + png
        head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(blob)}}],
                           "parameters": {"binary_data_output": True}}).encode()
        out.append((head + blob, f"application/octet-stream\r\nInference-Header-Content-Length: {len(head)}"))
    return out


def _run(url: str, bodies, clients: int, seconds: float, warmup: float, pid: int) -> dict:
    return run_loop(drive(url, auth(), bodies, clients, seconds, 10**9 if clients > 1 else 2000, warmup, pid))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="headwise-bench-v2-")
    work = Path(tmp.name)
    env = headwise_env(work / "data", **{k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
    migrate(env)
    load_start = os.getloadavg()
    runs: dict[str, list[dict]] = {}
    server = start_headwise(env, work / "logs")
    try:
        trained = train_model(server, env, work, n=args.samples, spec=bench_spec(epochs=args.epochs))
        pngs = example_pngs(trained["dataset_zip"], 64)
        paths = {"v1": (f"{server.url}/v1/models/{trained['model']}/predict",
                        [multipart(png, i) for i, png in enumerate(pngs)]),
                 "v2": (f"{server.url}/v2/models/{trained['model']}/infer", v2_bodies(pngs))}
        for url, bodies in paths.values():  # warm: model load, both code paths
            _run(url, bodies, 1, 2.0, 0.0, server.pid)
        for _ in range(args.rounds):
            for clients in (1, args.clients):
                for name, (url, bodies) in paths.items():
                    runs.setdefault(f"{name}@{clients}", []).append(
                        _run(url, bodies, clients, args.seconds, 2.0 if clients > 1 else 0.0, server.pid))
    finally:
        server.stop()
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("p50_ms", "p95_ms", "images_per_second")}
           | {"errors": [r["errors"] for r in v]} for k, v in runs.items()}
    ratios = {str(c): {"images_per_second_v2_over_v1": med[f"v2@{c}"]["images_per_second"] /
                       med[f"v1@{c}"]["images_per_second"],
                       "p50_v2_over_v1": med[f"v2@{c}"]["p50_ms"] / med[f"v1@{c}"]["p50_ms"]}
              for c in (1, args.clients)}
    for r in ratios.values():
        r["within_10_percent"] = bool(r["images_per_second_v2_over_v1"] >= 0.9 and r["p50_v2_over_v1"] <= 1.1)
    out = {"benchmark": "v2_infer", "settings": vars(args), "medians": med, "ratios": ratios, "runs": runs,
           "machine": machine("cpu") | {"load_average_at_start": load_start, "load_average_at_end": os.getloadavg()}}
    emit(out, args.json)
    rows = [[k, v["p50_ms"], v["p95_ms"], v["images_per_second"]] for k, v in med.items()]
    print()
    print(table(["path@clients", "p50 ms", "p95 ms", "images/s"], rows))
    print(table(["clients", "img/s v2/v1", "p50 v2/v1", "within 10%"],
                [[c, r["images_per_second_v2_over_v1"], r["p50_v2_over_v1"], r["within_10_percent"]]
                 for c, r in ratios.items()]))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
