"""A real `uvicorn` server process (Headwise's app on a migrated SQLite database) serving tiny trained models, for
the Open Inference Protocol tests with a third-party client (tritonclient).

Models registered (team alpha): `shapes` v1 = a 1-epoch tiny network on the example dataset; v2 = the same network
with the `category` head forced to 'none' (the gated `size` head is always suppressed); v3 = forced to 'circle'
(never suppressed). Team beta owns `secret`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("HEADWISE_E2E_START_TIMEOUT", 90))
SIZE = 16


def tiny_spec() -> dict:
    from service.ml.examples import example_spec

    spec = example_spec(image_size=SIZE, weighting="fixed", epochs=1)
    spec["model"].update(width=4, depth=1, head_hidden=8)
    spec["training"].update(batch_size=16, device="cpu")
    return spec


def _forced(result, task: str, klass: int):
    """A copy of `result` whose `task` head always predicts class index `klass` (last Linear: 0 weights, bias)."""
    import torch

    from service.ml.network import MultiTaskCNN

    net = MultiTaskCNN(result.spec)
    net.load_state_dict(result.state_dict)
    last = [m for m in net.head(task).modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-5.0)
        last.bias[klass] = 5.0
    return dataclasses.replace(result, state_dict={k: v.clone() for k, v in net.state_dict().items()})


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory) -> Path:
    from service.ml.examples import make_example_dataset

    return make_example_dataset(tmp_path_factory.mktemp("example") / "example.zip", n=48, image_size=SIZE)


@pytest.fixture(scope="session")
def example_pngs(example_zip: Path) -> list[bytes]:
    with zipfile.ZipFile(example_zip) as zf:
        return [zf.read(n) for n in sorted(zf.namelist()) if n.endswith(".png")]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, example_zip: Path) -> list[Path]:
    """Three artifacts (see the module doc), trained once per session."""
    from service.ml.artifact import save_artifact
    from service.ml.data import load_training_data
    from service.ml.spec import parse_spec
    from service.ml.train import train

    root = tmp_path_factory.mktemp("artifacts")
    spec, data = load_training_data(parse_spec(tiny_spec()), example_zip, root / "cache")
    result = train(spec, data, device="cpu")
    classes = list(spec.task("category").classes)
    out = []
    for i, res in enumerate([result, _forced(result, "category", classes.index("none")),
                             _forced(result, "category", classes.index("circle"))]):
        save_artifact(res, root / f"v{i + 1}")
        out.append(root / f"v{i + 1}")
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    host: str  # host:port, as tritonclient wants it
    keys: dict[str, str]
    log: Path
    data_dir: Path

    def log_sections(self) -> list[tuple[str, str]]:
        text = self.log.read_text(errors="replace") if self.log.exists() else "<no log>"
        return [("uvicorn log", text[-6000:])]


def _register(database_url: str, data_dir: Path, team: str, name: str, artifact: Path) -> None:
    from service.db.base import session_scope
    from service.db.tables import Job, ModelVersion, RegisteredModel, new_id

    with session_scope(database_url) as s:
        model = s.query(RegisteredModel).filter_by(team=team, name=name).one_or_none()
        if model is None:
            model = RegisteredModel(team=team, name=name)
            s.add(model)
            s.flush()
        version = 1 + s.query(ModelVersion).filter_by(model_id=model.id).count()
        job = Job(id=new_id(), team=team, dataset_id=None, model_name=name, spec=tiny_spec(), status="succeeded",
                  progress={"epoch": 1, "epochs": 1, "fraction": 1.0}, history=[], metrics={},
                  cancel_requested=False, attempts=1)
        s.add(job)
        s.flush()
        rel = f"artifacts/{model.id}/{version}"
        shutil.copytree(artifact, data_dir / rel)
        s.add(ModelVersion(model_id=model.id, version=version, job_id=job.id, dataset_id=None, spec=tiny_spec(),
                           metrics={}, artifact_path=rel, checksums={}))


def _keys(database_url: str, secret: str) -> dict[str, str]:
    from service.auth import create_key
    from service.db.base import session_scope

    wanted = {"alpha": ("alpha", ["predict", "models:read"]), "predict_only": ("alpha", ["predict"]),
              "read_only": ("alpha", ["models:read"]), "beta": ("beta", ["predict", "models:read"])}
    out = {}
    with session_scope(database_url) as s:
        for label, (team, scopes) in wanted.items():
            _row, out[label] = create_key(s, secret.encode(), name=label, team=team, scopes=scopes)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, artifacts: list[Path]) -> Iterator[Server]:
    from service.cli import run_migrations

    root = tmp_path_factory.mktemp("v2server")
    data_dir, db = root / "data", root / "headwise.db"
    database_url, secret = f"sqlite:///{db}", "protocols-test-secret"
    run_migrations(database_url)
    data_dir.mkdir()
    for artifact in artifacts:
        _register(database_url, data_dir, "alpha", "shapes", artifact)
    _register(database_url, data_dir, "beta", "secret", artifacts[0])
    keys = _keys(database_url, secret)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWISE_")}
    env.update(HEADWISE_DATA_DIR=str(data_dir), HEADWISE_DATABASE_URL=database_url, HEADWISE_SECRET=secret,
               HEADWISE_BROKER_URL="memory://", HEADWISE_MAX_PREDICT_IMAGES="32", HEADWISE_PREDICT_DEVICE="cpu",
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = root / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app",
                                 "--host", "127.0.0.1", "--port", str(port)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", keys, log, data_dir)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited with {proc.returncode}:\n{server.log_sections()[0][1]}")
            try:
                if httpx.get(server.url + "/v2/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start in {START_TIMEOUT} s:\n{server.log_sections()[0][1]}")
            time.sleep(0.2)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def png(color=(200, 30, 30), size: int = SIZE) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()
