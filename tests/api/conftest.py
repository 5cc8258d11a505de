"""API test fixtures: a TestClient app on a temp SQLite DB (schema from `alembic upgrade head`, once per session,
copied per test) and a temp DATA_DIR; enqueue and broker ping overridden (no Celery)."""

from __future__ import annotations

import io
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app, init_state
from service.api.deps import get_broker_ping, get_enqueue
from service.auth import create_key, load_secret
from service.config import Settings
from service.db.base import session_scope
from service.db.tables import Job, ModelVersion, RegisteredModel, new_id
from tests.e2e.harness import free_port

ADMIN_KEY = "test-root-admin-key"
ALL_SCOPES = ["datasets:write", "jobs:write", "models:read", "predict"]


def migrate(url: str) -> None:
    from service.cli import run_migrations

    run_migrations(url)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, template_db: Path) -> Settings:
    db = tmp_path / "headwise.db"
    shutil.copy(template_db, db)
    return Settings(DATA_DIR=tmp_path / "data", DATABASE_URL=f"sqlite:///{db}", BROKER_URL="memory://",
                    ADMIN_KEY=ADMIN_KEY, SECRET="test-secret", MAX_PREDICT_IMAGES=4)


@dataclass
class Enqueued:
    job_ids: list[str] = field(default_factory=list)
    seen_committed: list[bool] = field(default_factory=list)
    fail: bool = False


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()


@pytest.fixture(scope="session")
def base_app(tmp_path_factory):
    """Building the routes takes ~0.3 s: one app per session, re-bound to each test's settings."""
    root = tmp_path_factory.mktemp("base")
    return create_app(Settings(DATA_DIR=root, DATABASE_URL=f"sqlite:///{root}/unused.db", SECRET="x"))


@pytest.fixture
def app(base_app, settings: Settings, enqueued: Enqueued):
    app = base_app
    app.state.engine.dispose()
    init_state(app, settings)
    app.dependency_overrides.clear()

    def enqueue(job_id: str) -> None:
        # the row must already be committed: look for it from a separate session
        with app.state.sessionmaker() as s:
            enqueued.seen_committed.append(s.get(Job, job_id) is not None)
        if enqueued.fail:
            raise ConnectionError("broker down")
        enqueued.job_ids.append(job_id)

    app.dependency_overrides[get_enqueue] = lambda: enqueue
    app.dependency_overrides[get_broker_ping] = lambda: (lambda: True)
    yield app
    app.dependency_overrides.clear()
    app.state.engine.dispose()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def server(app):
    """The app served by uvicorn over real HTTP on a free port (in a thread) -> its base URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def make_key(settings: Settings) -> Callable[..., str]:
    def make(scopes: list[str] | None = None, team: str = "alpha", name: str = "test") -> str:
        with session_scope(settings.DATABASE_URL) as session:
            _row, key = create_key(session, load_secret(settings), name=name, team=team,
                                   scopes=scopes or ALL_SCOPES)
        return key

    return make


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def auth(make_key) -> dict[str, str]:
    """Headers of a team-alpha key with every non-admin scope."""
    return bearer(make_key())


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory) -> Path:
    from service.ml.examples import make_example_dataset

    return make_example_dataset(tmp_path_factory.mktemp("example") / "example.zip", n=48, image_size=16)


@pytest.fixture(scope="session")
def example_npz(tmp_path_factory) -> Path:
    from service.ml.examples import make_example_dataset

    return make_example_dataset(tmp_path_factory.mktemp("example") / "example.npz", n=24, image_size=16)


def tiny_spec(epochs: int = 1) -> dict:
    from service.ml.examples import example_spec

    spec = example_spec(image_size=16, weighting="fixed", epochs=epochs)
    spec["model"].update(width=4, depth=1, head_hidden=8)
    spec["training"].update(batch_size=16, device="cpu")
    return spec


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory, example_zip: Path) -> Path:
    """A real artifact: service.ml.train on the example dataset, 1 epoch, tiny model (once per session)."""
    from service.ml.artifact import save_artifact
    from service.ml.data import load_training_data
    from service.ml.spec import parse_spec
    from service.ml.train import train

    root = tmp_path_factory.mktemp("artifact")
    spec, data = load_training_data(parse_spec(tiny_spec()), example_zip, root / "cache")
    result = train(spec, data, device="cpu")
    out = root / "artifact"
    save_artifact(result, out)
    return out


def upload(client: TestClient, headers: dict, path: Path, name: str | None = None):
    data = {"name": name} if name else None
    with open(path, "rb") as fh:
        return client.post("/v1/datasets", headers=headers, files={"file": (path.name, fh)}, data=data)


@pytest.fixture
def dataset_id(client: TestClient, auth: dict, example_zip: Path) -> str:
    response = upload(client, auth, example_zip)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def register_model(settings: Settings, trained_artifact: Path) -> Callable[..., tuple[str, str]]:
    """Register a succeeded job + model version whose artifact is a copy of the trained one -> (job id, version id)."""

    def register(name: str = "shapes", team: str = "alpha", dataset_id: str | None = None) -> tuple[str, str]:
        with session_scope(settings.DATABASE_URL) as s:
            model = s.query(RegisteredModel).filter_by(team=team, name=name).one_or_none()
            if model is None:
                model = RegisteredModel(team=team, name=name)
                s.add(model)
                s.flush()
            version = 1 + len(s.query(ModelVersion).filter_by(model_id=model.id).all())
            job = Job(id=new_id(), team=team, dataset_id=dataset_id, model_name=name, spec=tiny_spec(),
                      status="succeeded", progress={"epoch": 1, "epochs": 1, "fraction": 1.0}, history=[],
                      metrics={"val_loss": 1.0}, cancel_requested=False, attempts=1)
            s.add(job)
            s.flush()
            rel = f"artifacts/{model.id}/{version}"
            shutil.copytree(trained_artifact, settings.DATA_DIR / rel)
            checksums = {"model.safetensors": "x"}
            mv = ModelVersion(model_id=model.id, version=version, job_id=job.id, dataset_id=dataset_id,
                              spec=tiny_spec(), metrics={"val_loss": 1.0}, artifact_path=rel, checksums=checksums)
            s.add(mv)
            s.flush()
            return job.id, mv.id

    return register


def png_bytes(size: int = 16, color=(200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color if mode == "RGB" else 128).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def data_files(settings: Settings) -> list[str]:
    """Every file under DATA_DIR except the secret and SQLite files (which are outside it here)."""
    root = settings.DATA_DIR
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "secret.key")
