"""The registry through the Python client and the `headwise models` CLI, over a real HTTP server."""

from __future__ import annotations

import pytest

from service.client import Client, Conflict, Forbidden
from service.client.cli import main as cli_main
from tests.api.conftest import png_bytes
from tests.contract.conftest import WRITER_SCOPES


@pytest.fixture
def key(make_key) -> str:
    return make_key(WRITER_SCOPES, name="release-bot")


def test_python_client_registry(live_url: str, key: str, make_key, register_model, tmp_path) -> None:
    for _ in range(3):
        register_model("shapes")
    with Client(live_url, key) as c:
        assert c.set_alias("shapes", "production", 1).to_version == 1
        assert c.set_alias("shapes", "production", 3).from_version == 1
        assert c.predict("shapes", png_bytes(), alias="production").model.version == 3
        assert c.rollback_alias("shapes", "production").to_version == 1
        assert [e.to_version for e in c.alias_history("shapes", "production")] == [1, 3, 1]
        v = c.update_version("shapes", 2, description="more data", tags=["candidate"])
        assert (v.description, v.tags) == ("more data", ["candidate"])
        assert c.update_version("shapes", 2, tags=[]).description == "more data"
        with pytest.raises(Conflict):
            c.delete_version("shapes", 1)
        c.delete_version("shapes", 2)
        assert [v.version for v in c.get_model("shapes").versions] == [1, 3]
        c.delete_alias("shapes", "production")
        assert c.get_model("shapes").aliases == []
    with Client(live_url, make_key(["models:read"])) as reader, pytest.raises(Forbidden):
        reader.set_alias("shapes", "production", 1)


def test_cli_models(live_url: str, key: str, register_model, capsys, tmp_path, settings) -> None:
    from service.db.base import session_scope
    from service.db.tables import ModelVersion

    for _ in range(2):
        _job, version_id = register_model("shapes")
    with session_scope(settings.DATABASE_URL) as s:  # v2 warm-started from v1 (training.init_from)
        s.get(ModelVersion, version_id).parent = {"model": "shapes", "version": 1}
    common = ["--url", live_url, "--key", key]

    def run(*args: str) -> tuple[int, str]:
        code = cli_main(list(args) + common)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    assert run("models", "alias", "set", "shapes", "production", "1") == (0, "production: - -> v1 (set)\n")
    assert run("models", "alias", "set", "shapes", "production", "2")[1] == "production: v1 -> v2 (set)\n"
    assert run("models", "alias", "rollback", "shapes", "production")[1] == "production: v2 -> v1 (rollback)\n"
    code, out = run("models", "alias", "history", "shapes", "production")
    assert code == 0 and out.count("by release-bot") == 3 and "v2 -> v1 (rollback)" in out
    code, out = run("models", "version", "edit", "shapes", "2", "--description", "bad labels", "--tags", "a,b")
    assert code == 0 and "tags: a, b" in out and "bad labels" in out
    code, out = run("models", "show", "shapes")
    assert code == 0 and "aliases: production=v1" in out and "bad labels" in out
    assert next(line for line in out.splitlines() if line.lstrip().startswith("2 ")).split()[1:3] == ["shapes", "v1"]
    code, out = run("models", "version", "rm", "shapes", "1")
    assert code == 1 and "409 Conflict" in out and "production" in out
    assert run("models", "version", "rm", "shapes", "2") == (0, "deleted shapes v2\n")
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    code, out = run("predict", "--model", "shapes", "--alias", "production", str(image))
    assert code == 0 and "model shapes version 1 (alias production)" in out
    code, out = run("models", "alias", "rm", "shapes", "production")
    assert code == 0 and run("models", "show", "shapes")[1].startswith("model shapes  latest v1  aliases: -")
