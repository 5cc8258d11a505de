"""End to end in embedded mode: `headwise serve` (API + one worker process, SQLite, SQLite broker, no Redis) with a
fresh data dir and no admin key configured. The test reads the URL and the generated admin key from its output,
uploads, trains, predicts, then SIGTERMs it and checks that no child (the worker) outlives it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    KEY_RE,
    START_TIMEOUT,
    URL_RE,
    LogBook,
    Proc,
    base_env,
    check_prediction,
    cmdline,
    expect,
    free_port,
    headwise_cmd,
    make_dataset,
    multipart_files,
    pid_running,
    poll_job,
    sample_images,
    tiny_spec,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.slow

MODEL = "embedded-shapes"


class Embedded(LogBook):
    def __init__(self, tmp: Path) -> None:
        super().__init__()
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.env = base_env(
            HEADWISE_DATA_DIR=str(self.data_dir), HEADWISE_HOST="127.0.0.1", HEADWISE_PORT=str(self.port)
        )
        self.procs: list[Proc] = []
        self.state: dict[str, Any] = {}

    def start(self, label: str) -> Proc:
        proc = Proc(
            f"serve-{label}", headwise_cmd("serve"), self.env, self.add(label, self.tmp / f"{label}.log")
        )
        self.procs.append(proc)
        return proc


@pytest.fixture(scope="module")
def emb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    e = Embedded(tmp_path_factory.mktemp("e2e-embedded"))
    try:
        yield e
    finally:
        for proc in e.procs:
            proc.stop()


def _printed(proc: Proc) -> tuple[str, str | None] | None:
    """(base URL, admin key or None) once `serve` has printed its URL (and the key, when one was generated)."""
    out = proc.output()
    urls = [u.rstrip(".,;)/") for u in URL_RE.findall(out)]
    base = next((u for u in urls if not u.endswith(("/docs", "/redoc", "/openapi.json"))), None)
    if base is None:
        return None
    key = KEY_RE.search(out)
    return base, key.group(0) if key else None


def test_embedded_walkthrough(emb: Embedded) -> None:
    serve = emb.start("first")
    wait_until(
        "serve to print its URL and admin key",
        lambda: (p := _printed(serve)) and p[1],
        START_TIMEOUT,
        proc=serve,
    )
    base_url, admin_key = _printed(serve)
    assert base_url.endswith(f":{emb.port}"), f"printed URL {base_url} does not use HEADWISE_PORT={emb.port}"
    assert f"{base_url}/docs" in serve.output(), "serve must print the docs URL"
    wait_healthy(base_url, serve)
    emb.state.update(base_url=base_url, admin_key=admin_key)
    assert httpx.get(f"{base_url}/ready", timeout=30).status_code == 200
    assert httpx.get(f"{base_url}/docs", timeout=10).status_code == 200

    dataset_file = make_dataset(emb.tmp / "dataset", n=64)
    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)
    with client:
        with open(dataset_file, "rb") as fh:
            ds = expect(
                client.post("/v1/datasets", files={"file": ("example.zip", fh, "application/zip")}), 201
            )
        assert ds["num_samples"] == 64, ds
        job = expect(
            client.post(
                "/v1/jobs", json={"dataset_id": ds["id"], "model_name": MODEL, "spec": tiny_spec(epochs=2)}
            ),
            202,
        )
        assert job["status"] == "queued", job
        done = poll_job(client, job["id"], ["succeeded"], procs=[serve])
        assert done["model"] == {"name": MODEL, "version": 1} and len(done["history"]) == 2, done

        images = sample_images(dataset_file, 2)
        out = expect(client.post(f"/v1/models/{MODEL}/predict", files=multipart_files(images)), 200)
        assert out["model"] == {"name": MODEL, "version": 1} and len(out["predictions"]) == 2, out
        for pred in out["predictions"]:
            check_prediction(pred)
    emb.state["trained"] = True

    # the worker is a child of serve (directly or further down); SIGTERM must take it along
    children = serve.descendants()
    assert children, "serve should run its worker as a child process"
    described = {pid: cmdline(pid) for pid in children}
    serve.popen.send_signal(signal.SIGTERM)  # the leader only, as a terminal's Ctrl-C/kill would
    try:
        rc = serve.popen.wait(45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headwise serve did not exit within 45 s of SIGTERM; children: {described}")
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"serve exited with {rc} on SIGTERM"
    try:
        wait_until("serve's children to exit", lambda: not any(pid_running(p) for p in children), 15)
    except AssertionError:
        left = {p: described[p] for p in children if pid_running(p)}
        pytest.fail(f"children outlived headwise serve after SIGTERM: {left}")


def test_embedded_restart_keeps_key_and_models(emb: Embedded) -> None:
    if not emb.state.get("trained"):
        pytest.skip("needs the walk-through's trained model (it failed or did not run)")
    serve = emb.start("second")
    wait_until("restarted serve to print its URL", lambda: _printed(serve), START_TIMEOUT, proc=serve)
    base_url, _ = _printed(serve)
    wait_healthy(base_url, serve)
    headers = {"Authorization": f"Bearer {emb.state['admin_key']}"}
    resp = httpx.get(f"{base_url}/v1/models/{MODEL}", headers=headers, timeout=30)
    assert resp.status_code == 200, f"after restart the first key and model must still work: {resp.text}"
    printed = {m.group(0) for m in KEY_RE.finditer(serve.output())}
    assert printed <= {emb.state["admin_key"]}, f"a restart must not generate another admin key: {printed}"
