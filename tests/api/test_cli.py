"""CLI: keys create/list/revoke against a migrated SQLite, migrate, worker command, first-start admin key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service import cli
from service.config import get_settings


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADWISE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HEADWISE_SECRET", "cli-secret")
    monkeypatch.delenv("HEADWISE_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEADWISE_ADMIN_KEY", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_migrate_and_keys(env, capsys) -> None:
    assert cli.main(["migrate"]) == 0
    assert (env / "data" / "headwise.db").is_file()
    assert cli.main(["keys", "create", "--name", "ci", "--scopes", "predict", "models:read", "--team", "t1"]) == 0
    out, err = capsys.readouterr()
    key = out.strip().splitlines()[-1]
    assert key.startswith("hw_") and len(key) == 57 and "team=t1" in err
    assert cli.main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key[:13] in listing and key not in listing and "models:read,predict" in listing
    assert cli.main(["keys", "revoke", "nomatch"]) == 1
    assert cli.main(["keys", "revoke", key[:13]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["keys", "list"]) == 0 and "revoked" in capsys.readouterr().out


def test_bad_scope_rejected(env) -> None:
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--name", "x", "--scopes", "root"])


def test_first_start_admin_key_once(env) -> None:
    cli.run_migrations()
    settings = get_settings()
    key = cli.ensure_admin_key(settings)
    assert key and key.startswith("hw_")
    assert cli.ensure_admin_key(settings) is None  # printed only when created
    assert cli.ensure_admin_key(settings.model_copy(update={"ADMIN_KEY": "given"})) is None


def test_host_port_flags_never_change_the_cached_settings(env) -> None:
    args = cli.build_parser().parse_args(["api", "--host", "0.0.0.0", "--port", "9123"])
    settings = cli._settings(args)
    assert (settings.HOST, settings.PORT) == ("0.0.0.0", 9123)
    assert (get_settings().HOST, get_settings().PORT) == ("127.0.0.1", 8000)
    plain = cli._settings(cli.build_parser().parse_args(["api"]))
    assert (plain.HOST, plain.PORT) == ("127.0.0.1", 8000)


def test_worker_command_and_env(env) -> None:
    cmd = cli.worker_command()
    assert cmd[:5] == [sys.executable, "-m", "celery", "-A", "worker.app:app"]
    assert cmd[5:] == ["worker", "-Q", "gpu", "--concurrency", "1", "--max-tasks-per-child", "1", "-l", "info"]
    env_vars = cli.worker_env(get_settings())
    assert env_vars["HEADWISE_DATA_DIR"] == str(env / "data")
    assert env_vars["HEADWISE_BROKER_URL"].startswith("sqla+sqlite:///")


def test_stop_process_terminates_then_kills() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"up"
    cli.stop_process(proc, timeout=0.5)
    assert proc.returncode is not None


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "api", "worker", "migrate", "keys", "example-dataset", "datasets", "train", "jobs",
                    "predict"):
        assert command in out
