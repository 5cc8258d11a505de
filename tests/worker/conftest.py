"""Worker test fixtures: a fresh DATA_DIR + database per test, settings pointed at them, caches cleared."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service import queue
from service.config import Settings, get_settings
from service.db.base import Base, get_engine, get_sessionmaker, session_scope
from service.db.tables import Dataset


def clear_caches() -> None:
    for cached in (get_settings, get_engine, get_sessionmaker, queue.get_producer):
        cached.cache_clear()


@dataclass
class Env:
    data_dir: Path
    database_url: str
    settings: Settings


def make_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, database_url: str, **settings: str) -> Env:
    engine = None
    try:
        engine = get_engine()
    except Exception:  # noqa: BLE001
        pass
    if engine is not None:
        engine.dispose()
    monkeypatch.setenv("HEADWISE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HEADWISE_DATABASE_URL", database_url)
    monkeypatch.setenv("HEADWISE_BROKER_URL", f"sqla+sqlite:///{data_dir / 'broker.db'}")
    monkeypatch.setenv("HEADWISE_REAPER_SECONDS", "0")
    for key, value in settings.items():
        monkeypatch.setenv(f"HEADWISE_{key}", str(value))
    clear_caches()
    Base.metadata.create_all(get_engine())
    return Env(data_dir=get_settings().DATA_DIR, database_url=database_url, settings=get_settings())


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """SQLite database + data dir in tmp_path; enqueue_training recorded instead of sent."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    yield make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'headwise.db'}")
    get_engine().dispose()
    clear_caches()


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records enqueue_training calls (from the reaper) instead of talking to a broker."""
    calls: list[str] = []
    monkeypatch.setattr("worker.reaper.enqueue_training", calls.append)
    monkeypatch.setattr("worker.reaper.ping_broker", lambda timeout=2: True)
    return calls


def add_dataset(path: Path, data_dir: Path, team: str = "default") -> str:
    """Register an existing dataset file (copied under datasets/<id>/) and return its id."""
    import hashlib
    import shutil

    from service.db.tables import new_id
    from service.storage import Storage

    storage = Storage(data_dir)
    dataset_id = new_id()
    target = storage.dataset_dir(dataset_id) / f"dataset{path.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    with session_scope() as session:
        session.add(Dataset(
            id=dataset_id, team=team, name=path.stem, format=path.suffix.lstrip("."), filename=path.name,
            num_samples=0, columns={}, size_bytes=target.stat().st_size,
            sha256=hashlib.sha256(target.read_bytes()).hexdigest(), path=storage.rel(target),
        ))
    return dataset_id


def add_job(dataset_id: str | None, spec: dict, model_name: str = "pets", team: str = "default") -> str:
    from service.db import jobs as jobs_repo
    with session_scope() as session:
        return jobs_repo.create_job(session=session, team=team, dataset_id=dataset_id, model_name=model_name,
                               spec=spec).id
