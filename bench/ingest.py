"""Dataset ingestion benchmark: a 20,000-image zip of 64x64 PNGs uploaded to a real server, seconds and peak RSS.

    python bench/ingest.py [--json bench/results/ingest.json] [--images 20000 5000]

For each size: writes the zip (PNG entries + labels.csv streamed into the archive, never held in memory), starts a
FRESH server (`uvicorn --factory service.api.app:create_app`, embedded SQLite) so its peak RSS (VmHWM) belongs to that
upload alone, uploads the zip with a streaming multipart POST /v1/datasets from a separate client process (httpx
with a file object), and reports the upload seconds (request sent -> 201 with the dataset validated and
committed), the server's RSS before and its peak after, and the client's peak RSS. Bounded memory means the
server's peak does not grow with the archive: compare the two sizes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, table  # noqa: E402
from bench.harness import ADMIN_KEY, REPO, headwise_env, migrate, start_headwise  # noqa: E402

CLIENT = r"""
import json, resource, sys, time, httpx
url, key, path = sys.argv[1:4]
with open(path, "rb") as f, httpx.Client(timeout=3600) as client:
    t = time.perf_counter()
    r = client.post(url, headers={"Authorization": f"Bearer {key}"}, files={"file": ("big.zip", f, "application/zip")})
    seconds = time.perf_counter() - t
body = r.json()
print(json.dumps({"status": r.status_code, "seconds": seconds, "num_samples": body.get("num_samples"),
                  "detail": body.get("detail"), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_zip(path: Path, n: int, size: int = 64, seed: int = 0) -> dict:
    """n PNG images (a shape on a noisy background) + labels.csv (category, value). Entries are written one by
    one and the label rows go to a file on disk first: memory stays flat whatever n is."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    yy, xx = np.mgrid[0:size, 0:size]
    labels_path = path.with_suffix(".labels.csv")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf, open(labels_path, "w") as labels:
        labels.write("image,category,value\n")
        for i in range(n):
            img = rng.integers(0, 60, 3) + rng.normal(0, 6, (size, size, 3))
            cat = int(rng.integers(0, 3))
            if cat:
                r = rng.uniform(6, size / 2.5)
                cx, cy = rng.uniform(r, size - r, 2)
                inside = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r) if cat == 1 else \
                    ((abs(xx - cx) <= r) & (abs(yy - cy) <= r))
                img[inside] = rng.integers(120, 256, 3)
            buf = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, "PNG")
            name = f"images/{i:06d}.png"
            zf.writestr(name, buf.getvalue())
            value = "" if rng.random() < 0.3 else f"{rng.normal():.4f}"
            labels.write(f"{name},{('none', 'circle', 'square')[cat]},{value}\n")
        labels.flush()
        zf.write(labels_path, "labels.csv", compress_type=zipfile.ZIP_DEFLATED)
    labels_path.unlink()
    return {"images": n, "zip_mb": path.stat().st_size / 2**20, "build_seconds": time.perf_counter() - started}


def upload(server, path: Path) -> dict:
    cmd = [sys.executable, "-c", CLIENT, f"{server.url}/v1/datasets", ADMIN_KEY, str(path)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--images", type=int, nargs="+", default=[20000, 5000])
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="headwise-bench-ingest-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    runs = []
    for n in args.images:
        zpath = work / f"ingest-{n}.zip"
        built = write_zip(zpath, n)
        env = headwise_env(work / f"data-{n}")
        migrate(env)
        with start_headwise(env, work / "logs", name=f"headwise-{n}") as server:
            rss_before = server.rss_mb()
            cpu_before = server.cpu_seconds()
            result = upload(server, zpath)
            run = {**built, "status": result["status"], "num_samples": result["num_samples"],
                   "upload_seconds": result["seconds"], "images_per_second": n / result["seconds"],
                   "server_rss_before_mb": rss_before, "server_peak_rss_mb": server.peak_rss_mb(),
                   "server_cpu_seconds": server.cpu_seconds() - cpu_before,
                   "client_peak_rss_mb": result["peak_rss_mb"]}
            if result["status"] != 201:
                run["detail"] = result["detail"]
        zpath.unlink()
        runs.append(run)
    out = {"benchmark": "ingest", "runs": runs,
           "machine": {"cpu_count": os.cpu_count(), "load_average_at_start": load_start,
                       "load_average_at_end": os.getloadavg()}}
    emit(out, args.json)
    print()
    print(table(["images", "zip MB", "status", "upload s", "images/s", "server RSS before MB", "server peak RSS MB",
                 "client peak RSS MB"],
                [[r["images"], r["zip_mb"], r["status"], r["upload_seconds"], r["images_per_second"],
                  r["server_rss_before_mb"], r["server_peak_rss_mb"], r["client_peak_rss_mb"]] for r in runs]))
    m = out["machine"]
    print(f"load average at start {tuple(round(x, 2) for x in m['load_average_at_start'])}, "
          f"at end {tuple(round(x, 2) for x in m['load_average_at_end'])}; {m['cpu_count']} CPUs")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
