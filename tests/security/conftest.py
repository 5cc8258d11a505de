"""A small hostile-input world: the real app (TestClient) on a fresh SQLite database (schema from `alembic upgrade
head`) and a fresh DATA_DIR per test, two teams with keys of different scopes, datasets, jobs and a model
trained for real; plus snapshots of every database row and of the data directory tree."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from service.api.app import create_app, init_state
from service.api.deps import get_broker_ping, get_enqueue
from service.auth import create_key, load_secret
from service.config import Settings
from service.db import jobs as jobs_repo
from service.db import keys as keys_repo
from service.db.base import session_scope
from service.db.tables import Job, ModelVersion, RegisteredModel, new_id, utcnow
from tests.security import builders as b

ROOT_KEY = "security-root-admin-key-" + "x" * 24
USER_SCOPES = ["datasets:write", "jobs:write", "models:read", "predict"]
# who -> (team, scopes); "revoked" is revoked before the test starts
KEYS = {
    "alpha": ("alpha", USER_SCOPES),
    "alpha_predict": ("alpha", ["predict"]),
    "alpha_reader": ("alpha", ["models:read"]),
    "alpha_admin": ("alpha", ["admin"]),
    "beta": ("beta", USER_SCOPES),
    "beta_admin": ("beta", ["admin"]),
    "revoked": ("alpha", USER_SCOPES),
}
MAX_UPLOAD = 512 * 1024
MAX_PREDICT_IMAGES = 4
MAX_PREDICT_BYTES = 96 * 1024
# A dataset whose columns exercise every label rule at job creation (6 images).
LABEL_COLUMNS = ("image", "category", "flag", "amount", "nanval", "infval", "empty", "shade", "notes")
LABEL_ROWS = [
    ("images/img0.png", "square", "yes", "1.5", "0.1", "1", "", "red", "x"),
    ("images/img1.png", "circle", "no", "2", "nan", "2", "", "red", "y"),
    ("images/img2.png", "square", "maybe", "abc", "0.3", "inf", "", "blue", ""),
    ("images/img3.png", "circle", "1", "", "0.4", "-inf", "", "green", "z"),
    ("images/img4.png", "", "0", "3", "", "5", "", "red", ""),
    ("images/img5.png", "circle", "", "4", "0.6", "6", "", "", "w"),
]


def tiny_spec(epochs: int = 1, image_size: int = 16) -> dict:
    from service.ml.examples import example_spec

    spec = example_spec(image_size=image_size, weighting="fixed", epochs=epochs)
    spec["model"].update(width=4, depth=1, head_hidden=8)
    spec["training"].update(batch_size=16, device="cpu")
    return spec


# ------------------------------------------------------------------------------------------- snapshots


def db_snapshot(engine) -> dict[str, list[str]]:
    """Every row of every table (reflected, so tables added later are covered too)."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {t.name: sorted(repr(tuple(row)) for row in conn.execute(select(t))) for t in meta.sorted_tables}


def tree_snapshot(root: Path) -> list[tuple[str, str]]:
    """(relative path, 'dir' | 'link' | sha256) of everything under root."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out.append((rel, "link"))
        elif path.is_dir():
            out.append((rel, "dir"))
        else:
            out.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    return out


# ----------------------------------------------------------------------------------------------- world


@dataclass
class World:
    client: TestClient
    app: Any
    settings: Settings
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # dataset / job ids by name
    enqueued: list[str] = field(default_factory=list)

    def h(self, who: str | None = "alpha") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who else {}

    def upload(self, data: bytes, filename: str = "dataset.zip", who: str = "alpha",
               name: str | None = None) -> httpx.Response:
        form = {"name": name} if name else None
        return self.client.post("/v1/datasets", headers=self.h(who), files={"file": (filename, data)}, data=form)

    def job(self, spec: Any, dataset: str = "labels", who: str = "alpha", **body: Any) -> httpx.Response:
        payload = {"dataset_id": self.ids.get(dataset, dataset), "model_name": "m1", "spec": spec, **body}
        return self.client.post("/v1/jobs", headers=self.h(who), json=payload)

    def predict_json(self, images: list[bytes | str], model: str = "shapes", who: str = "alpha") -> httpx.Response:
        items = [x if isinstance(x, str) else base64.b64encode(x).decode() for x in images]
        return self.client.post(f"/v1/models/{model}/predict", headers=self.h(who), json={"images": items})

    def predict_files(self, images: list[tuple[str, bytes]], model: str = "shapes",
                      who: str = "alpha") -> httpx.Response:
        files = [("files", (name, data, "image/png")) for name, data in images]
        return self.client.post(f"/v1/models/{model}/predict", headers=self.h(who), files=files)

    def raw(self, method: str, path: str, who: str | None = "alpha", **kw: Any) -> httpx.Response:
        headers = {**self.h(who), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def snapshot(self) -> tuple[dict, list]:
        return db_snapshot(self.app.state.engine), tree_snapshot(self.settings.DATA_DIR)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    from service.cli import run_migrations

    path = tmp_path_factory.mktemp("schema") / "template.db"
    run_migrations(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory) -> Path:
    from service.ml.examples import make_example_dataset

    return make_example_dataset(tmp_path_factory.mktemp("example") / "example.zip", n=24, image_size=16)


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory, example_zip: Path) -> Path:
    """A real artifact: one epoch of the tiny model on the example dataset."""
    from service.ml.artifact import save_artifact
    from service.ml.data import load_training_data
    from service.ml.spec import parse_spec
    from service.ml.train import train

    root = tmp_path_factory.mktemp("artifact")
    spec, data = load_training_data(parse_spec(tiny_spec()), example_zip, root / "cache")
    out = root / "artifact"
    save_artifact(train(spec, data, device="cpu"), out)
    return out


@pytest.fixture(scope="session")
def base_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    return create_app(Settings(DATA_DIR=root, DATABASE_URL=f"sqlite:///{root}/unused.db", SECRET="x"))


def labels_dataset() -> bytes:
    rows = [",".join(r) for r in LABEL_ROWS]
    labels = (",".join(LABEL_COLUMNS) + "\n" + "\n".join(rows) + "\n").encode()
    images = {r[0]: b.noise_png(8, seed=i) for i, r in enumerate(LABEL_ROWS)}
    return b.dataset_zip(images, labels)


def register_model(settings: Settings, artifact: Path, *, team: str, name: str, dataset_id: str | None) -> str:
    """A succeeded job with one model version whose artifact is a copy of `artifact` -> the job id."""
    with session_scope(settings.DATABASE_URL) as s:
        model = RegisteredModel(team=team, name=name)
        s.add(model)
        s.flush()
        job = Job(id=new_id(), team=team, dataset_id=dataset_id, model_name=name, spec=tiny_spec(),
                  status="succeeded", progress={"epoch": 1, "epochs": 1, "fraction": 1.0}, history=[],
                  metrics={}, cancel_requested=False, attempts=1, finished_at=utcnow())
        s.add(job)
        s.flush()
        rel = f"artifacts/{model.id}/1"
        shutil.copytree(artifact, settings.DATA_DIR / rel)
        s.add(ModelVersion(model_id=model.id, version=1, job_id=job.id, dataset_id=dataset_id, spec=tiny_spec(),
                           metrics={}, artifact_path=rel, checksums={}))
        return job.id


def build_world(app, settings: Settings, client: TestClient, example_zip: Path, artifact: Path) -> World:
    w = World(client=client, app=app, settings=settings)
    secret = load_secret(settings)
    with session_scope(settings.DATABASE_URL) as s:
        for who, (team, scopes) in KEYS.items():
            row, key = create_key(s, secret, name=who, team=team, scopes=scopes)
            w.keys[who], w.key_ids[who] = key, row.id
        keys_repo.revoke_api_key(session=s, key=row, when=utcnow())  # the last one: "revoked"
    w.keys["root"] = ROOT_KEY
    w.keys["malformed"] = "hw_not-a-key"
    forged = w.keys["alpha"][:14] + ("A" if w.keys["alpha"][14] != "A" else "B") + w.keys["alpha"][15:]
    w.keys["forged"] = forged  # a real key's prefix with another secret
    for who, team in (("alpha", "alpha"), ("beta", "beta")):
        r = w.upload(example_zip.read_bytes(), "example.zip", who=who)
        assert r.status_code == 201, r.text
        w.ids[team] = r.json()["id"]
    r = w.upload(labels_dataset(), "labels.zip")
    assert r.status_code == 201, r.text
    w.ids["labels"] = r.json()["id"]
    w.ids["alpha_job"] = register_model(settings, artifact, team="alpha", name="shapes", dataset_id=w.ids["alpha"])
    w.ids["beta_job"] = register_model(settings, artifact, team="beta", name="beta-shapes", dataset_id=w.ids["beta"])
    with session_scope(settings.DATABASE_URL) as s:
        w.ids["beta_queued"] = jobs_repo.create_job(session=s, team="beta", dataset_id=w.ids["beta"], model_name="q",
                                               spec=tiny_spec()).id
    for who in KEYS:  # record last_used_at now, so that the requests under test do not write it
        if who != "revoked":
            assert client.get("/v1/datasets", headers=w.h(who)).status_code == 200
    return w


@pytest.fixture
def world(tmp_path: Path, template_db: Path, base_app, example_zip: Path, trained_artifact: Path
          ) -> Iterator[World]:
    db = tmp_path / "headwise.db"
    shutil.copy(template_db, db)
    settings = Settings(DATA_DIR=tmp_path / "data", DATABASE_URL=f"sqlite:///{db}", BROKER_URL="memory://",
                        ADMIN_KEY=ROOT_KEY, SECRET="security-secret", MAX_UPLOAD_BYTES=MAX_UPLOAD,
                        MAX_PREDICT_IMAGES=MAX_PREDICT_IMAGES, MAX_PREDICT_BYTES=MAX_PREDICT_BYTES)
    app = base_app
    app.state.engine.dispose()
    init_state(app, settings)
    app.dependency_overrides.clear()
    enqueued: list[str] = []
    app.dependency_overrides[get_enqueue] = lambda: enqueued.append
    app.dependency_overrides[get_broker_ping] = lambda: (lambda: True)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = build_world(app, settings, client, example_zip, trained_artifact)
        w.enqueued = enqueued
        yield w
    app.dependency_overrides.clear()
    app.state.engine.dispose()


@pytest.fixture
def limits(monkeypatch) -> Callable[..., None]:
    """Shrink the engine's dataset limits for one test (what a deployment can configure in code)."""
    from service.ml.data import archive, images, table

    def set_limits(**kw: Any) -> None:
        new = archive.Limits(**kw)
        for module in (archive, table, images):
            monkeypatch.setattr(module, "DEFAULT_LIMITS", new)

    return set_limits
