"""Client CLI start-up: `headwise --help` and `headwise jobs ls` (against a real `headwise serve --no-worker`),
each against the raw floor measured in the same run: a bare interpreter (`python -c pass`) and a bare httpx GET
of /v1/jobs (the least `jobs ls` can do; like `headwise`, it skips httpx's own CLI module). Wall time of the whole process, rounds interleaved.

    python bench/cli_startup.py [--rounds 15] [--json bench/results/cli_startup.json] [--client-venv DIR]

--client-venv runs the client side (both floors and both commands) with another venv's python and `headwise`,
e.g. a client-only install (`pip install .`: httpx + pydantic, no server packages); the server always runs from
this interpreter's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.e2e.harness import free_port  # noqa: E402

HEADWISE = [str(Path(sys.executable).parent / "headwise")]  # the installed console script (the server)
KEY = "bench-cli-admin-key"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """-> (wall seconds, CPU seconds user+sys of the child). CPU time is the figure that survives a loaded host."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"headwise serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("headwise serve did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client-venv", type=Path, help="venv whose python and headwise run the client side")
    args = parser.parse_args()
    client_python = str(args.client_venv / "bin" / "python") if args.client_venv else sys.executable
    client = [str(args.client_venv / "bin" / "headwise")] if args.client_venv else HEADWISE
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "HEADWISE_DATA_DIR": tmp, "HEADWISE_ADMIN_KEY": KEY, "HEADWISE_PORT": str(port),
               "HEADWISE_URL": f"http://127.0.0.1:{port}", "HEADWISE_API_KEY": KEY, "HEADWISE_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([*HEADWISE, "serve", "--no-worker"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", server)
            # the floor skips httpx's own command-line module as `headwise` does (service/cli.py main)
            raw_get = (f"import sys; sys.modules['httpx._main'] = None; "
                       f"import httpx; r = httpx.get('http://127.0.0.1:{port}/v1/jobs', headers={{'Authorization': "
                       f"'Bearer {KEY}'}}); r.raise_for_status(); print(r.text)")
            variants = {
                "python -c pass (floor)": [client_python, "-c", "pass"],
                "headwise --help": [*client, "--help"],
                "httpx GET /v1/jobs (floor)": [client_python, "-c", raw_get],
                "headwise jobs ls": [*client, "jobs", "ls"],
            }
            for cmd in variants.values():  # warm the page cache
                timed(cmd, env)
            runs: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, cmd in variants.items():
                    wall, used = timed(cmd, env)
                    runs[name].append(wall)
                    cpu[name].append(used)
        finally:
            server.terminate()
            server.wait(15)
    med = {name: statistics.median(v) for name, v in runs.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    result = {
        "rounds": args.rounds,
        "client": "client-only venv" if args.client_venv else "this venv (server + test packages, editable)",
        "median_seconds": med,
        "median_cpu_seconds": med_cpu,
        "max_seconds": {name: max(v) for name, v in runs.items()},
        "ratio_help_vs_bare_python": med["headwise --help"] / med["python -c pass (floor)"],
        "ratio_jobs_ls_vs_raw_httpx": med["headwise jobs ls"] / med["httpx GET /v1/jobs (floor)"],
        "cpu_ratio_jobs_ls_vs_raw_httpx": med_cpu["headwise jobs ls"] / med_cpu["httpx GET /v1/jobs (floor)"],
        "load_average": os.getloadavg(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("\n| command | median wall s | max wall s | median CPU s |\n|---|---|---|---|")
    for name in variants:
        print(f"| `{name}` | {med[name]:.3f} | {result['max_seconds'][name]:.3f} | {med_cpu[name]:.3f} |")
    print(f"\nratios: --help / bare python {result['ratio_help_vs_bare_python']:.2f}; "
          f"jobs ls / raw httpx {result['ratio_jobs_ls_vs_raw_httpx']:.2f}")


if __name__ == "__main__":
    main()
