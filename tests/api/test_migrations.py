"""`alembic upgrade head` on fresh SQLite and PostgreSQL databases matches service.db.tables (no autogenerate diff)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.cli import run_migrations
from service.db.base import Base, make_engine
from tests.conftest import create_database, drop_database, postgres_error, unavailable

ROOT = Path(__file__).resolve().parents[2]


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _check(url: str) -> None:
    run_migrations(url)
    run_migrations(url)  # idempotent
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            assert tables == set(Base.metadata.tables)
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
            assert diff == [], diff
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            assert version == _head()
    finally:
        engine.dispose()


def test_upgrade_head_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_upgrade_head_postgres() -> None:
    error = postgres_error()
    if error:
        unavailable(error)
    name, url = create_database("headwise_test_api")
    try:
        _check(url)
    finally:
        drop_database(name)


def test_alembic_ini_points_at_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    newest = sorted(p.name.split("_")[0] for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1]
    assert script.get_current_head() == newest


@pytest.mark.parametrize("url", ["sqlite:///:memory:"])
def test_offline_sql_renders(url: str, capsys) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head", sql=True)
    assert "CREATE TABLE jobs" in capsys.readouterr().out
