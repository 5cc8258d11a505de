"""Benchmark harness: real server subprocesses (uvicorn), free ports, /health waits, process RSS/CPU from /proc,
and a model trained through the real API + worker job runner on the example dataset."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def headwise_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without HEADWISE_* settings, embedded SQLite, CPU, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWISE_")}
    env.update(PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
               HEADWISE_DATA_DIR=str(data_dir), HEADWISE_ADMIN_KEY=ADMIN_KEY, HEADWISE_SECRET="bench-secret",
               HEADWISE_TRAIN_DEVICE="cpu", HEADWISE_PREDICT_DEVICE="cpu", HEADWISE_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM = peak resident set size; VmRSS = current (MiB)."""
    return int(proc_status(pid)[field].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    name: str
    popen: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def peak_rss_mb(self) -> float:
        return rss_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float:
        return rss_mb(self.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(name: str, app: str, env: dict[str, str], log_dir: Path, *, factory: bool = False,
                 timeout: float = 120.0, health: str = "/health") -> Server:
    """`python -m uvicorn APP` on a free port (uvloop/httptools when installed, no access log), then wait for
    GET `health` -> 200. The same flags for every server the benchmarks compare."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log"] + (["--factory"] if factory else [])
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, popen, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(server.url + health, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not answer {health} within {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def start_headwise(env: dict[str, str], log_dir: Path, name: str = "headwise") -> Server:
    return start_server(name, "service.api.app:create_app", env, log_dir, factory=True)


def migrate(env: dict[str, str]) -> None:
    code = "import sys; from service.cli import main; sys.argv[0] = 'headwise'; sys.exit(main(['migrate']))"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def bench_spec(image_size: int = 64, width: int = 32, depth: int = 4, epochs: int = 2) -> dict:
    """The example spec at the benchmark size (the spec example's model: 64x64, width 32, depth 4)."""
    from service.ml.examples import example_spec

    spec = example_spec(image_size=image_size, epochs=epochs)
    spec["model"].update(width=width, depth=depth, head_hidden=64)
    spec["training"].update(batch_size=64, val_fraction=0.2, early_stopping=False)  # timed runs: every epoch
    return spec


RUN_JOB = """import importlib, logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s.%(msecs)03d %(name)s %(message)s", datefmt="%H:%M:%S")
from worker.jobs import run_job
if sys.argv[2] == "preload":  # what worker/app.py does in a Celery child before it takes a job
    from worker.app import ENGINE_MODULES
    for name in ENGINE_MODULES:
        importlib.import_module(name)
print(run_job(sys.argv[1]))"""


def run_job(env: dict[str, str], job_id: str, timeout: float = 1800, *, with_log: bool = False,
            preload: bool = False):
    """The worker's job runner in a fresh process, without a broker. preload: import the engine first, as a
    Celery child does before it takes a job (worker/app.py); otherwise torch is imported after the claim.
    -> the outcome ("succeeded", ...), or (outcome, the job's log lines) with with_log."""
    mode = "preload" if preload else "cold"
    out = subprocess.run([sys.executable, "-c", RUN_JOB, job_id, mode], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"run_job failed ({out.returncode}):\n{out.stderr[-4000:]}")
    outcome = out.stdout.strip().splitlines()[-1]
    return (outcome, out.stderr) if with_log else outcome


def train_model(server: Server, env: dict[str, str], workdir: Path, *, name: str = "shapes", n: int = 512,
                spec: dict | None = None) -> dict:
    """Upload the example dataset, create a job, run it with worker.jobs.run_job, download the artifact.
    -> {"model", "version", "artifact_dir", "dataset_zip", "spec", "seconds"}."""
    from service.ml.examples import make_example_dataset

    spec = spec or bench_spec()
    size = spec["model"]["image_size"]
    zpath = make_example_dataset(workdir / f"shapes{size}.zip", n=n, seed=0, image_size=size)
    started = time.perf_counter()
    with httpx.Client(base_url=server.url, headers=auth(), timeout=600) as client, open(zpath, "rb") as f:
        r = client.post("/v1/datasets", files={"file": (zpath.name, f, "application/zip")})
        r.raise_for_status()
        r = client.post("/v1/jobs", json={"dataset_id": r.json()["id"], "model_name": name, "spec": spec})
        r.raise_for_status()
        job_id = r.json()["id"]
        outcome = run_job(env, job_id)
        job = client.get(f"/v1/jobs/{job_id}").json()
        if outcome != "succeeded" or job["status"] != "succeeded":
            raise RuntimeError(f"training job ended {outcome}/{job['status']}: {job.get('error')}")
        version = job["model"]["version"]
        r = client.get(f"/v1/models/{name}/versions/{version}/artifact")
        r.raise_for_status()
    artifact_dir = workdir / f"artifact-{name}-v{version}"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(artifact_dir)
    return {"model": name, "version": version, "artifact_dir": str(artifact_dir), "dataset_zip": str(zpath),
            "spec": spec, "seconds": time.perf_counter() - started, "job_id": job_id}


def example_pngs(dataset_zip: Path | str, count: int = 64) -> list[bytes]:
    """The first `count` image files of the example dataset zip (PNG, plus the odd JPEG), as bytes."""
    out = []
    with zipfile.ZipFile(dataset_zip) as zf:
        for info in zf.infolist():
            if info.filename.lower().endswith((".png", ".jpg", ".jpeg")):
                out.append(zf.read(info))
                if len(out) == count:
                    break
    return out
