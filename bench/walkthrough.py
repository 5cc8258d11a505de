"""The README walk-through, timed as a user runs it: `headwise serve` (embedded: API + one worker), then
`headwise example-dataset`, the one-call upload + train, polling until the job ends, and /predict on the README's
image -- with the figures the README shows.

    python bench/walkthrough.py [--json bench/results/walkthrough.json] [--spec FILE] [--n N] [--image-size S]
        [--screenshots docs]   # also the dashboard on this model in Chromium: docs/dashboard{,-models,-try}.png

Timed from `headwise example-dataset` to the job's `succeeded` (after the server printed its banner and its worker
is alive, as a user would start typing). Reported: the seconds of each part, the worker's training seconds,
epochs, images/s (train images x epochs / training seconds: the machine-independent-ish figure; a busy machine
lowers it, and the epochs stay the same unless a time budget is set), the best epoch's validation metrics and,
for the regression heads, the mean predictor on the same validation rows (the train split's mean).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import emit, machine, table  # noqa: E402
from bench.harness import REPO, auth, free_port, headwise_env  # noqa: E402

CLI = "import sys; from service.cli import main; sys.argv[0] = 'headwise'; sys.exit(main(sys.argv[1:]))"


def headwise(env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, cwd=kw.pop("cwd", REPO), check=True,
                          capture_output=True, text=True, **kw)


def start_serve(env: dict, log: Path) -> tuple[subprocess.Popen, str, float]:
    """`headwise serve` -> (process, url, seconds until /ready reports a live worker)."""
    url = f"http://127.0.0.1:{env['HEADWISE_PORT']}"
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", CLI, "serve"], env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(url + "/ready", timeout=2)
            if r.status_code == 200 and (r.json().get("workers") or {}).get("alive", 0) >= 1:
                return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"serve had no live worker within 300 s:\n{log.read_text()[-3000:]}")


def mean_predictor(zip_path: Path, spec: dict) -> dict:
    """Per regression head: RMSE/MAE of predicting the train split's mean on the validation rows the job scored
    (the trainer's own split of the same data; labelled rows whose gate is open)."""
    from service.ml.data import encode_labels, read_table, resolve_spec
    from service.ml.gating import effective_masks
    from service.ml.spec import parse_spec
    from service.ml.train import stratified_split

    table_ = read_table(zip_path)
    s = resolve_spec(parse_spec(spec), table_)
    labels = encode_labels(s, table_)

    class _Data:  # what stratified_split reads
        images = np.zeros(len(table_))

    _Data.labels = labels
    train_idx, val_idx = stratified_split(s, _Data)
    eff = effective_masks(s, {t: labels[t].values for t in s.task_names}, {t: labels[t].mask for t in s.task_names})
    out = {}
    for t in s.tasks:
        if t.type != "regression":
            continue
        v = labels[t.name].values
        m_train, m_val = train_idx[eff[t.name][train_idx]], val_idx[labels[t.name].mask[val_idx]]
        if s.task(t.name).gate is not None:  # scored given the true gate: labelled rows whose gate is open
            m_val = val_idx[eff[t.name][val_idx]]
        err = v[m_val] - v[m_train].mean()
        out[t.name] = {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
                       "n": len(m_val)}
    return out


def readme_image(zip_path: Path) -> tuple[str, bytes, dict]:
    """The README's img.png: the first .png in the zip (its one-liner), with its labels row."""
    with zipfile.ZipFile(zip_path) as z:
        name = [n for n in z.namelist() if n.endswith(".png")][0]
        rows = {r["image"]: r for r in csv.DictReader(io.StringIO(z.read("labels.csv").decode()))}
        return name, z.read(name), rows[name]


def screenshots(url: str, zpath: Path, job_id: str, out: Path) -> None:
    """The dashboard on the walk-through's model, in Debian's Chromium (Playwright): the job page, the version page,
    and "Try it" on the first 6 images of the example -> out/dashboard.png, dashboard-models.png, dashboard-try.png."""
    from playwright.sync_api import sync_playwright

    from bench.harness import ADMIN_KEY

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zpath) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))[:6]
        files = [{"name": Path(n).name, "mimeType": "image/png", "buffer": z.read(n)} for n in names]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("HEADWISE_CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url, bypass_csp=True).new_page()
        page.goto("/ui")
        page.fill("#key-input", ADMIN_KEY)
        page.click("#key-save")
        page.wait_for_selector("#key-status.ok")
        page.click("nav .tab[data-tab=jobs]")
        page.click(f"#jobs-table tbody tr[data-id='{job_id}']")
        page.wait_for_function("document.querySelector('#job-curves').complete && "
                               "document.querySelector('#job-curves').naturalWidth > 0", timeout=60_000)
        page.evaluate("() => { const d = document.querySelector('#new-job'); if (d) d.open = false; }")
        page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        page.click("nav .tab[data-tab=models]")
        page.click("#models-table tbody tr[data-name=shapes]")
        page.click("#versions-table tbody tr[data-version='1']")
        page.wait_for_function("[...document.querySelectorAll('#version-plots img')].length > 0 && [...document."
                               "querySelectorAll('#version-plots img')].every(i => i.naturalWidth > 0)",
                               timeout=60_000)
        page.screenshot(path=str(out / "dashboard-models.png"), full_page=True)
        page.click("#versions-table tbody tr[data-version='1'] button")
        page.wait_for_selector("#tab-try:not([hidden])")
        page.set_input_files("#try-file", files)
        page.click("#try-btn")
        page.wait_for_selector("#prediction-table")
        page.screenshot(path=str(out / "dashboard-try.png"), full_page=True)
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--spec", help="a spec file instead of the one example-dataset writes")
    ap.add_argument("--n", type=int, help="example size (default: example-dataset's)")
    ap.add_argument("--image-size", type=int, help="example image size (default: example-dataset's)")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server and its worker (default: torch's; "
                    "1 avoids OpenMP barrier stalls when other processes load the CPU)")
    ap.add_argument("--screenshots", type=Path, help="also save the dashboard on this model (Chromium) into DIR")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hw-walk-") as tmp:
        tmp = Path(tmp)
        env = headwise_env(tmp / "data", HEADWISE_PORT=str(free_port()), HEADWISE_HOST="127.0.0.1",
                           **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
        proc, url, serve_seconds = start_serve(env, tmp / "serve.log")
        try:
            t0 = time.perf_counter()
            extra = [*(["--n", str(args.n)] if args.n else []),
                     *(["--image-size", str(args.image_size)] if args.image_size else [])]
            headwise(env, "example-dataset", str(tmp / "example.zip"), *extra)
            zpath, spec_path = tmp / "example.zip", Path(args.spec) if args.spec else tmp / "example.spec.json"
            t_gen = time.perf_counter()
            with httpx.Client(base_url=url, headers=auth(), timeout=120) as c:
                with open(zpath, "rb") as f:
                    r = c.post("/v1/jobs", files={"file": ("example.zip", f, "application/zip")},
                               data={"spec": spec_path.read_text(), "model_name": "shapes",
                                     "dataset_name": "shapes"})
                r.raise_for_status()
                job_id = r.json()["id"]
                t_up = time.perf_counter()
                while True:
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.25)
                t_done = time.perf_counter()
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
                name, png, truth = readme_image(zpath)
                t_p = time.perf_counter()
                r = c.post("/v1/models/shapes/predict", files={"files": ("img.png", png, "image/png")})
                r.raise_for_status()
                predict_seconds = time.perf_counter() - t_p
                prediction = r.json()
            if args.screenshots:
                screenshots(url, zpath, job_id, args.screenshots)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # serve and its worker
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        spec = json.loads(spec_path.read_text())
        baseline = mean_predictor(zpath, spec)
        n_images = len(zipfile.ZipFile(zpath).namelist()) - 1

    hist = job["history"]
    train_seconds = sum(h["seconds"] for h in hist)
    n_train = round(n_images * (1 - spec["training"].get("val_fraction", 0.15)))
    tasks = job["metrics"]["tasks"]
    result = {
        "benchmark": "walkthrough",
        "command": "python bench/walkthrough.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": machine("cpu"),
        "images": n_images,
        "spec": spec,
        "seconds": {"serve_until_worker_alive": round(serve_seconds, 1),
                    "end_to_end": round(t_done - t0, 1), "example_dataset": round(t_gen - t0, 1),
                    "upload_and_create_job": round(t_up - t_gen, 1),
                    "job_created_to_succeeded": round(t_done - t_up, 1), "training": round(train_seconds, 1),
                    "predict_one_image": round(predict_seconds, 3)},
        "epochs": len(hist), "best_epoch": job["metrics"].get("best_epoch"),
        "stopped": job["metrics"].get("stopped"),
        "train_images_per_second": round(n_train * len(hist) / train_seconds, 1),
        "metrics": tasks,
        "mean_predictor": baseline,
        "job_baselines": job["metrics"].get("baselines"),  # the job's own (service/ml/baselines.py), for comparison
        "readme_image": {"file": name, "labels": truth, "prediction": prediction},
    }
    emit(result, args.json)
    print()
    rows = [[t, k, v, baseline.get(t, {}).get(k)] for t, m in tasks.items() for k, v in m.items()
            if isinstance(v, float) and k != "loss"]
    print(table(["head", "metric", "validation", "mean predictor"], rows))
    print(f"\nend to end {result['seconds']['end_to_end']} s (training {result['seconds']['training']} s, "
          f"{len(hist)} epochs, best {result['best_epoch']}, {result['train_images_per_second']} train img/s)")


if __name__ == "__main__":
    main()
