"""Load test: N concurrent asyncio clients (httpx, keep-alive) for T seconds against a real Headwise server.

    python bench/load.py [--clients 32] [--seconds 60] [--json bench/results/load.json]   # self-hosted
    python bench/load.py --url http://HOST:8000 --key KEY --model NAME [--job ID] [--dataset ID] [--images a.png ...]

Self-hosted: migrates a fresh embedded (SQLite) data dir -- or HEADWISE_DATABASE_URL / HEADWISE_BROKER_URL from the
environment --, starts `uvicorn --factory service.api.app:create_app`, trains a tiny model on the example dataset
with the worker's job runner, creates a team key with the user scopes, then runs the load.

Each client loops over a weighted mix: POST /predict JSON 1 image (40), POST /predict multipart 2 images (15),
GET /v1/jobs/{id} (15), GET /v1/datasets (10), GET /v1/models/{name} (10), GET /v1/jobs (5), GET /health (3),
GET /ready (2). Pass: no 5xx other than deliberate 503 (which must carry Retry-After) and no transport errors.
Prints JSON (status counts, requests/s, per-endpoint p50/p95/p99 latency), then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.common import emit, table  # noqa: E402

USER_SCOPES = ["datasets:write", "jobs:write", "models:read", "predict"]
MIX = (("predict_json", 40), ("predict_multipart", 15), ("get_job", 15), ("list_datasets", 10),
       ("get_model", 10), ("list_jobs", 5), ("health", 3), ("ready", 2))


@dataclass
class Targets:
    model: str
    images: list[bytes]
    job_id: str | None = None
    dataset_id: str | None = None


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: Counter = field(default_factory=Counter)
    by_endpoint: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter = field(default_factory=Counter)
    missing_retry_after: int = 0
    samples: list[str] = field(default_factory=list)  # a few unexpected responses, for the report


def _request(kind: str, t: Targets, rng: random.Random) -> tuple[str, str, dict]:
    image = t.images[rng.randrange(len(t.images))]
    if kind == "predict_json":
        return "POST", f"/v1/models/{t.model}/predict", {"json": {"images": [base64.b64encode(image).decode()]}}
    if kind == "predict_multipart":
        files = [("files", (f"{i}.png", t.images[rng.randrange(len(t.images))], "image/png")) for i in range(2)]
        return "POST", f"/v1/models/{t.model}/predict", {"files": files}
    if kind == "get_job":
        return "GET", f"/v1/jobs/{t.job_id}" if t.job_id else "/v1/jobs?limit=1", {}
    if kind == "list_datasets":
        return "GET", "/v1/datasets?limit=10", {}
    if kind == "get_model":
        return "GET", f"/v1/models/{t.model}", {}
    if kind == "list_jobs":
        return "GET", "/v1/jobs?limit=10", {}
    if kind == "health":
        return "GET", "/health", {}
    return "GET", "/ready", {}


async def _client(client: httpx.AsyncClient, t: Targets, deadline: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        method, path, kw = _request(kind, t, rng)
        started = time.perf_counter()
        try:
            resp = await client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            stats.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        stats.latencies[kind].append(time.perf_counter() - started)
        stats.status[resp.status_code] += 1
        stats.by_endpoint[kind][resp.status_code] += 1
        if resp.status_code == 503:
            if not resp.headers.get("retry-after"):
                stats.missing_retry_after += 1
            await asyncio.sleep(min(float(resp.headers.get("retry-after") or 1), 1.0) * rng.random())
        elif resp.status_code >= 400 and len(stats.samples) < 5:
            stats.samples.append(f"{method} {path} -> {resp.status_code}: {resp.text[:200]}")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_load(base_url: str, key: str, targets: Targets, *, clients: int = 32, seconds: float = 60.0,
                   timeout: float = 60.0, seed: int = 0) -> dict:
    """Run the mix; -> figures (JSON-able) with "ok" = no unexpected 5xx, no 503 without Retry-After, no errors."""
    stats = Stats()
    # idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s), never raced with it
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                                 limits=limits) as client:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_client(client, targets, deadline, stats, seed + i) for i in range(clients)))
        wall = time.monotonic() - started
    total = sum(stats.status.values())
    unexpected = sum(n for code, n in stats.status.items() if code >= 500 and code != 503)
    endpoints = {
        kind: {"requests": len(lat), "status": dict(sorted(stats.by_endpoint[kind].items())),
               "p50_ms": _pct(lat, 0.50), "p95_ms": _pct(lat, 0.95), "p99_ms": _pct(lat, 0.99),
               "mean_ms": statistics.fmean(lat) * 1000 if lat else None}
        for kind, lat in sorted(stats.latencies.items())
    }
    predicted = sum(stats.by_endpoint[k][200] * (1 if k == "predict_json" else 2)
                    for k in ("predict_json", "predict_multipart"))
    return {
        "clients": clients, "seconds": round(wall, 2), "requests": total, "requests_per_second": total / wall,
        "images_predicted_per_second": predicted / wall,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "unexpected_5xx": unexpected, "deliberate_503": stats.status.get(503, 0),
        "503_without_retry_after": stats.missing_retry_after, "transport_errors": dict(stats.errors),
        "endpoints": endpoints, "unexpected_samples": stats.samples,
        "ok": unexpected == 0 and stats.missing_retry_after == 0 and not stats.errors,
    }


def report(result: dict) -> str:
    rows = [[kind, e["requests"], e["p50_ms"], e["p95_ms"], e["p99_ms"],
             " ".join(f"{c}:{n}" for c, n in e["status"].items())] for kind, e in result["endpoints"].items()]
    head = (f"{result['clients']} clients, {result['seconds']} s: {result['requests']} requests "
            f"({result['requests_per_second']:.1f}/s, {result['images_predicted_per_second']:.1f} images/s), "
            f"unexpected 5xx {result['unexpected_5xx']}, deliberate 503 {result['deliberate_503']}, "
            f"transport errors {sum(result['transport_errors'].values())} -> {'PASS' if result['ok'] else 'FAIL'}")
    return head + "\n" + table(["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "status"], rows)


# ------------------------------------------------------------------------------------------ self-hosted


def tiny_spec(epochs: int = 2) -> dict:
    from bench.harness import bench_spec

    return bench_spec(image_size=16, width=8, depth=1, epochs=epochs)


def prepare(workdir: Path, **env_extra: str):
    """Fresh data dir (+ database from the environment or embedded SQLite), a server, a trained tiny model and a
    team key -> (server, env, targets, key)."""
    import httpx as sync_httpx

    from bench.harness import auth, example_pngs, headwise_env, migrate, start_headwise, train_model

    passthrough = {k: v for k, v in os.environ.items() if k in ("HEADWISE_DATABASE_URL", "HEADWISE_BROKER_URL")}
    env = headwise_env(workdir / "data", **{**passthrough, **env_extra})
    migrate(env)
    server = start_headwise(env, workdir / "logs")
    try:
        trained = train_model(server, env, workdir, name="load", n=128, spec=tiny_spec())
        with sync_httpx.Client(base_url=server.url, headers=auth(), timeout=60) as client:
            key = client.post("/v1/keys", json={"name": "load", "scopes": USER_SCOPES}).raise_for_status().json()["key"]
            dataset_id = client.get("/v1/datasets").raise_for_status().json()["items"][0]["id"]
    except BaseException:
        server.stop()
        raise
    images = example_pngs(trained["dataset_zip"], 16)
    return server, env, Targets("load", images, trained["job_id"], dataset_id), key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", help="also write the JSON result here")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--key", help="API key with models:read and predict (with --url)")
    parser.add_argument("--model", help="registered model name (with --url)")
    parser.add_argument("--job", help="a job id for GET /v1/jobs/{id} (with --url)")
    parser.add_argument("--images", nargs="*", help="image files to send (with --url)")
    args = parser.parse_args(argv)
    if args.url:
        if not (args.key and args.model and args.images):
            parser.error("--url needs --key, --model and --images")
        targets = Targets(args.model, [Path(p).read_bytes() for p in args.images], args.job)
        result = asyncio.run(run_load(args.url, args.key, targets, clients=args.clients, seconds=args.seconds))
    else:
        with tempfile.TemporaryDirectory(prefix="headwise-load-") as tmp:
            server, _env, targets, key = prepare(Path(tmp))
            try:
                result = asyncio.run(run_load(server.url, key, targets, clients=args.clients, seconds=args.seconds))
            finally:
                server.stop()
    emit(result, args.json)
    print(report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
