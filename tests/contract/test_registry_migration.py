"""Migration 0002 on a database with data (SQLite and PostgreSQL): existing models get last_version = their highest
version (so deleting it later never lets the number be reused), and downgrading 0002 to 0001 and upgrading to head again works."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from service.cli import migrations_dir
from service.db.base import make_engine
from tests.conftest import create_database, drop_database, postgres_error, unavailable


def _alembic(url: str, *args: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    getattr(command, args[0])(cfg, args[1])


def _check(url: str) -> None:
    _alembic(url, "upgrade", "0001")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO registered_models (id, team, name, created_at) VALUES "
                              "('m1', 'alpha', 'shapes', CURRENT_TIMESTAMP), ('m2', 'alpha', 'empty', CURRENT_TIMESTAMP)"))
            for number in (1, 3):
                conn.execute(text(
                    "INSERT INTO jobs (id, team, model_name, spec, status, progress, history, metrics, "
                    "cancel_requested, attempts, created_at) VALUES (:id, 'alpha', 'shapes', '{}', 'succeeded', "
                    "'{}', '[]', '{}', false, 1, CURRENT_TIMESTAMP)"), {"id": f"j{number}"})
                conn.execute(text(
                    "INSERT INTO model_versions (id, model_id, version, job_id, spec, metrics, artifact_path, "
                    "checksums, created_at) VALUES (:id, 'm1', :v, :job, '{}', '{}', 'a', '{}', CURRENT_TIMESTAMP)"),
                    {"id": f"v{number}", "v": number, "job": f"j{number}"})
        _alembic(url, "upgrade", "0002")
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT name, last_version FROM registered_models")).all())
            assert rows == {"shapes": 3, "empty": 0}
            assert conn.execute(text("SELECT count(*) FROM model_aliases")).scalar_one() == 0
        _alembic(url, "downgrade", "0001")  # 0002's own downgrade and upgrade again, then the later ones
        _alembic(url, "upgrade", "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT last_version FROM registered_models WHERE id = 'm1'")).scalar_one() == 3
    finally:
        engine.dispose()


def test_0002_backfills_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'old.db'}")


def test_0002_backfills_on_postgres() -> None:
    error = postgres_error()
    if error:
        unavailable(error)
    name, url = create_database("headwise_test_contract")
    try:
        _check(url)
    finally:
        drop_database(name)


pytestmark = pytest.mark.filterwarnings("ignore")
