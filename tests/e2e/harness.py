"""Subprocess harness for the end-to-end tests: real `headwise` processes, free ports, captured logs.

Every process runs in its own session (process group) with stdout+stderr going to a log file; `stop()` sends
SIGTERM to the whole group, waits, then SIGKILLs it, so nothing outlives a test. The e2e conftest attaches the
tail of every log to a failing test's report.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

KEY_RE = re.compile(r"\bhw_[A-Za-z0-9]+_[A-Za-z0-9_\-]{20,}")
URL_RE = re.compile(r"https?://[^\s'\"<>]+")

TERMINAL = ("succeeded", "failed", "cancelled")


def env_timeout(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# Bounded but generous on a loaded 2-core machine; override with env for slow hosts.
START_TIMEOUT = env_timeout("HEADWISE_E2E_START_TIMEOUT", 90)
JOB_TIMEOUT = env_timeout("HEADWISE_E2E_JOB_TIMEOUT", 120)


def headwise_cmd(*args: str) -> list[str]:
    """The `headwise` console script of this interpreter's environment (fallback: service.cli.main)."""
    exe = BIN / "headwise"
    if exe.exists():
        return [str(exe), *args]
    code = "import sys; from service.cli import main; sys.argv[0] = 'headwise'; sys.exit(main())"
    return [sys.executable, "-c", code, *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """The parent's environment minus any HEADWISE_* settings, CPU-only and unbuffered, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWISE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HEADWISE_TRAIN_DEVICE="cpu",
        HEADWISE_PREDICT_DEVICE="cpu",
    )
    env.update(extra)
    return env


def tail(path: Path, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no log>"
    return text if len(text) <= max_chars else "...\n" + text[-max_chars:]


class Proc:
    """A long-running child in its own process group, logging to `log`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path = REPO):
        self.name, self.cmd, self.log = name, cmd, log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def descendants(self) -> list[int]:
        return descendants(self.pid)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the group, wait, then SIGKILL whatever is left. Returns the leader's exit code."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # stragglers in the group, if any
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log_file.close()
        return self.popen.returncode


class LogBook:
    """Collects log files so a failing test can show their tails (see tests/e2e/conftest.py)."""

    def __init__(self) -> None:
        self.logs: dict[str, Path] = {}

    def add(self, name: str, path: Path) -> Path:
        self.logs[name] = path
        return path

    def log_sections(self) -> list[tuple[str, str]]:
        return [(f"log: {name} ({path})", tail(path)) for name, path in self.logs.items()]


def run_cli(
    args: Iterable[str], env: dict[str, str], book: LogBook, name: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot `headwise ...` command; its output is logged and returned."""
    result = subprocess.run(
        headwise_cmd(*args),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    log = book.add(name, Path(env.get("HEADWISE_DATA_DIR", "/tmp")) / f"{name}.log")
    log.write_text(
        f"$ headwise {' '.join(args)}\nrc={result.returncode}\n--- stdout\n{result.stdout}\n"
        f"--- stderr\n{result.stderr}\n"
    )
    return result


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state ppid ...
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children, found, todo = _ppid_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pid_running(pid: int) -> bool:
    """True when the pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5, proc: Proc | None = None
) -> Any:
    """Call `check` until it returns a truthy value; fail (naming `what`) on timeout or when `proc` dies."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        if proc is not None and not proc.alive():
            raise AssertionError(
                f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}; "
                f"its log ({proc.log}):\n{tail(proc.log, 4000)}"
            )
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


def wait_healthy(base_url: str, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    def ok() -> bool:
        return httpx.get(f"{base_url}/health", timeout=5).status_code == 200

    wait_until(f"{proc.name} GET /health", ok, timeout, proc=proc)


def describe(resp: httpx.Response) -> str:
    return f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: {resp.text[:2000]}"


def expect(resp: httpx.Response, *statuses: int) -> Any:
    """Assert the status; return the decoded JSON body (None for an empty body)."""
    assert resp.status_code in statuses, f"expected {statuses}, got {describe(resp)}"
    if not resp.content:
        return None
    if resp.headers.get("content-type", "").startswith("application/json"):
        return resp.json()
    return resp.content


def expect_error(resp: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    """Assert an error response in the contract's shape {"error": kind, "detail": "..."}."""
    assert resp.status_code == status, f"expected {status}, got {describe(resp)}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body, (
        f"error body must be {{'error', 'detail'}}: {describe(resp)}"
    )
    if kind is not None:
        assert body["error"] == kind, f"expected error kind {kind!r}: {describe(resp)}"
    return body


def items(body: Any, *keys: str) -> list[dict[str, Any]]:
    """A list endpoint's items, whether the body is a bare list or wraps it (e.g. {"items": [...]})."""
    if isinstance(body, list):
        return body
    assert isinstance(body, dict), f"expected a list or an object, got {body!r}"
    for key in (*keys, "items", "data", "results"):
        if isinstance(body.get(key), list):
            return body[key]
    raise AssertionError(f"no list of items in {body!r}")


def poll_job(
    client: httpx.Client,
    job_id: str,
    want: Iterable[str],
    timeout: float = JOB_TIMEOUT,
    procs: Iterable[Proc] = (),
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its status is in `want`; fail early on another terminal status."""
    want = tuple(want)
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = expect(client.get(f"/v1/jobs/{job_id}"), 200)
        if last["status"] in want:
            return last
        if last["status"] in TERMINAL:
            raise AssertionError(f"job {job_id} ended {last['status']!r}, wanted {want}: {last}")
        for proc in procs:
            assert proc.alive(), (
                f"{proc.name} died (rc {proc.popen.returncode}) while job {job_id} was {last}; "
                f"its log:\n{tail(proc.log, 4000)}"
            )
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not in {want} after {timeout:.0f}s; last: {last}")


# ------------------------------------------------------------------------------------ example data


def make_dataset(out_dir: Path, n: int = 96, image_size: int = 16) -> Path:
    """The engine's synthetic example dataset (zip with labels.csv: category, is_big, size (gated), hue)."""
    from service.ml.examples import make_example_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(make_example_dataset(out_dir / "example.zip", n=n, seed=0, image_size=image_size))


def sample_images(dataset: Path, count: int = 3) -> list[tuple[str, bytes]]:
    """(name, bytes) of the first `count` images inside the dataset zip."""
    with zipfile.ZipFile(dataset) as zf:
        names = sorted(
            n
            for n in zf.namelist()
            if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"))
        )
        assert len(names) >= count, f"dataset has only {len(names)} images"
        return [(Path(n).name, zf.read(n)) for n in names[:count]]


def tiny_spec(epochs: int = 3) -> dict[str, Any]:
    return {
        "tasks": [
            {"name": "category", "type": "multiclass"},
            {"name": "is_big", "type": "binary"},
            {
                "name": "size",
                "type": "regression",
                "gate": {"task": "category", "classes": ["circle", "square"]},
            },
            {"name": "hue", "type": "regression"},
        ],
        "model": {"image_size": 16, "width": 8, "depth": 1, "head_hidden": 16, "dropout": 0.0},
        "training": {"epochs": epochs, "batch_size": 32, "seed": 0, "device": "cpu", "val_fraction": 0.25,
                     "early_stopping": False},  # every epoch runs: the tests count them
    }


TASKS = ("category", "is_big", "size", "hue")


def check_prediction(pred: dict[str, Any]) -> None:
    """One image's outputs in the engine's per-head forms (gated heads: value null, gated true, reason)."""
    assert set(TASKS) <= set(pred), f"prediction lacks heads: {pred}"
    cat = pred["category"]
    assert cat["label"] in ("none", "circle", "square"), cat
    assert set(cat["probabilities"]) == {"none", "circle", "square"}, cat
    assert abs(sum(cat["probabilities"].values()) - 1.0) < 1e-3, cat
    big = pred["is_big"]
    assert isinstance(big["label"], bool) and 0.0 <= big["probability"] <= 1.0, big
    assert isinstance(pred["hue"]["value"], int | float), pred["hue"]
    size = pred["size"]
    if cat["label"] == "none":
        assert size.get("value") is None and size.get("gated") is True, f"size must be gated: {pred}"
        assert isinstance(size.get("reason"), str) and "category" in size["reason"], size
    else:
        assert isinstance(size.get("value"), int | float) and not size.get("gated"), f"size not gated: {pred}"


def multipart_files(images: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, io.BytesIO, str]]]:
    return [
        ("files", (name, io.BytesIO(data), mimetypes.guess_type(name)[0] or "application/octet-stream"))
        for name, data in images
    ]
