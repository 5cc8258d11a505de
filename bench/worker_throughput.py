"""Worker end-to-end training vs the engine's own train(), same data and spec, alternating, in one run.

    python bench/worker_throughput.py [--json bench/results/worker_throughput.json] [--samples 1024] [--epochs 2]

Data: the example dataset (64x64 PNG zip, `--samples` images), spec: the example spec at the benchmark size
(image_size 64, width 32, depth 4, batch 64, val_fraction 0.2, hflip). Each round runs, in fresh processes:
  engine  service.ml.train.train(spec, data) on the decoded dataset (decoding not timed): the engine's figure,
          as bench/train_throughput measures it (train() call only)
  worker  a job created through the real API on a freshly uploaded copy of the dataset, run by
          worker.jobs.run_job in a process that imported the engine first (what a Celery child does before it
          takes a job, worker/app.py): timed from the job's started_at (claimed) to finished_at (artifact
          stored, version registered) -- so it includes decoding the dataset into the image cache,
          progress/heartbeat writes, the ONNX export and its check, saving the artifact and the registry
          transaction.
  worker_cold  the same without the preload: torch and the engine are imported after the claim (what every
          job paid before the preload).
Reports seconds and images/s (train images x epochs / seconds) per round, the median ratio worker/engine
(target >= 0.9: within 10%), and each worker variant's fixed cost per job: its seconds minus the train() call's
own seconds (from the job's log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.common import emit, table  # noqa: E402
from bench.harness import (  # noqa: E402
    REPO,
    auth,
    bench_spec,
    headwise_env,
    migrate,
    run_job,
    start_headwise,
)

ENGINE = r"""
import json, sys, time
from pathlib import Path
from service.ml.data import load_training_data
from service.ml.spec import parse_spec
from service.ml.train import train
import torch._inductor.config  # what train() imports on its first call (torch.use_deterministic_algorithms):
# 1.2 s that a long-lived process pays once; the worker's Celery child preloads it, so the engine must not pay it
spec_json, zip_path, cache = sys.argv[1:4]
spec, data = load_training_data(parse_spec(json.loads(spec_json)), Path(zip_path), Path(cache))
t = time.perf_counter()
result = train(spec, data, device="cpu")
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "samples": len(data.images),
                  "images_per_second_history": [h.get("images_per_second") for h in result.history]}))
"""


def engine_run(spec: dict, zip_path: Path, cache: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", ENGINE, json.dumps(spec), str(zip_path), str(cache)], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_run(server, env: dict, spec: dict, zip_path: Path, name: str, preload: bool) -> dict:
    with httpx.Client(base_url=server.url, headers=auth(), timeout=600) as client, open(zip_path, "rb") as f:
        r = client.post("/v1/datasets", files={"file": (zip_path.name, f, "application/zip")})
        r.raise_for_status()
        r = client.post("/v1/jobs", json={"dataset_id": r.json()["id"], "model_name": name, "spec": spec})
        r.raise_for_status()
        job_id = r.json()["id"]
        outcome, log = run_job(env, job_id, with_log=True, preload=preload)
        job = client.get(f"/v1/jobs/{job_id}").json()
    if outcome != "succeeded":
        raise RuntimeError(f"job {job_id} ended {outcome}: {job.get('error')}")
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    trained = re.search(r"trained \d+ epochs in ([\d.]+) s", log)
    return {"seconds": (finished - started).total_seconds(), "job_id": job_id, "log": log.strip().splitlines(),
            "train_call_seconds": float(trained.group(1)) if trained else None,
            "images_per_second_history": [h.get("images_per_second") for h in job["history"]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="headwise-bench-worker-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    from service.ml.examples import make_example_dataset

    spec = bench_spec(epochs=args.epochs)
    zip_path = make_example_dataset(work / "shapes64.zip", n=args.samples, seed=0, image_size=64)
    env = headwise_env(work / "data")
    migrate(env)
    train_images = args.samples - round(args.samples * spec["training"]["val_fraction"])
    images = train_images * args.epochs
    variants = ["engine", "worker", "worker_cold"]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with start_headwise(env, work / "logs") as server:
        for r in range(args.rounds):  # rotate which goes first
            for variant in variants[r % 3:] + variants[:r % 3]:
                if variant == "engine":
                    res = engine_run(spec, zip_path, work / f"engine-cache-{r}", env)
                else:
                    res = worker_run(server, env, spec, zip_path, f"{variant}{r}".replace("_", "-"),
                                     preload=variant == "worker")
                    if res["train_call_seconds"] is not None:
                        res["fixed_seconds"] = res["seconds"] - res["train_call_seconds"]
                res["images_per_second"] = images / res["seconds"]
                runs[variant].append(res)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    fixed = {k: statistics.median(x["fixed_seconds"] for x in v) for k, v in runs.items()
             if v and all("fixed_seconds" in x for x in v)}
    out = {"benchmark": "worker_throughput", "config": {"samples": args.samples, "train_images": train_images,
                                                        "epochs": args.epochs, "rounds": args.rounds,
                                                        "model": spec["model"]},
           "runs": runs, "median_seconds": med,
           "median_images_per_second": {k: images / v for k, v in med.items()},
           "ratio_worker_to_engine": med["engine"] / med["worker"], "target_ratio": 0.9,
           "ratio_worker_cold_to_engine": med["engine"] / med["worker_cold"],
           "median_fixed_seconds_per_job": fixed,
           "machine": {"cpu_count": os.cpu_count(), "load_average_at_start": load_start,
                       "load_average_at_end": os.getloadavg()}}
    emit(out, args.json)
    print()
    rows = [[k, i + 1, x["seconds"], x["images_per_second"]] for k, v in runs.items() for i, x in enumerate(v)]
    print(table(["variant", "round", "seconds", "images/s"], rows))
    print(f"\nworker/engine = {out['ratio_worker_to_engine']:.3f} (target >= 0.9), without the preload "
          f"{out['ratio_worker_cold_to_engine']:.3f}; fixed seconds per job (job minus its train() call): "
          + ", ".join(f"{k} {v:.2f}" for k, v in fixed.items()))
    print(f"load average at start "
          f"{tuple(round(x, 2) for x in load_start)}, at end {tuple(round(x, 2) for x in os.getloadavg())}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
