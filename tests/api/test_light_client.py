"""The client installs light: `pip install headwise` (the package's core dependencies) is the SDK and the client
CLI, and they work in an interpreter that has nothing else.

The light interpreter is the base Python with `-S` (no site-packages at all) and a path holding only the repo and
the distributions pip installs for the core dependencies (their requirement closure, read from the installed
metadata): torch, celery, sqlalchemy, numpy, fastapi... cannot be imported there. It runs `headwise` against the
real app served over HTTP. (A real `pip install .` into a fresh venv takes ~40 s here; README "Quick start" gives the
command.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("torch", "celery", "sqlalchemy", "numpy", "fastapi", "matplotlib", "PIL", "pydantic_settings",
               "psycopg", "alembic", "click", "rich")


def core_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def closure(requirements: list[Requirement]) -> set[str]:
    """Distribution names pip installs for `requirements` (no extras), from the installed metadata."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(req.name) or []]
    return seen


def light_site(tmp_path: Path, dists: set[str]) -> Path:
    """A directory of symlinks to the top-level modules and .dist-info of `dists` only."""
    site = tmp_path / "site"
    site.mkdir()
    for name in dists:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    return site


@pytest.fixture(scope="module")
def light_python(tmp_path_factory) -> list[str]:
    site = light_site(tmp_path_factory.mktemp("light"), closure(core_requirements()))
    base = getattr(sys, "_base_executable", sys.executable)
    boot = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(site)!r}]; sys.argv[0] = 'headwise'; "
            "exec(sys.argv.pop(1))")
    return [base, "-S", "-c", boot]


def run(light_python: list[str], code: str, *args: str, url: str = "http://127.0.0.1:9", key: str = ADMIN_KEY,
        check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HEADWISE_"))}
    env.update(HEADWISE_URL=url, HEADWISE_API_KEY=key)
    done = subprocess.run([*light_python, code, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


CLI = "from service.cli import main; sys.exit(main())"


def test_the_core_dependencies_are_the_client_only() -> None:
    assert sorted(r.name for r in core_requirements()) == ["httpx", "pydantic"]
    assert not closure(core_requirements()) & {"torch", "celery", "sqlalchemy", "numpy", "fastapi", "matplotlib"}


def test_server_packages_cannot_be_imported_there(light_python) -> None:
    code = ("import importlib.util as u; import service.client, service.client.cli, service.client.sdk; "
            f"print(json.dumps([m for m in {SERVER_ONLY!r} if u.find_spec(m)]))")
    out = run(light_python, "import json; " + code).stdout
    assert json.loads(out) == []


def test_the_client_cli_and_sdk_work_against_the_real_app(light_python, server, make_key, example_zip) -> None:
    assert "jobs" in run(light_python, CLI, "--help").stdout
    key = make_key(["datasets:write", "jobs:write", "models:read"])
    up = run(light_python, CLI, "datasets", "upload", str(example_zip), "--name", "shapes", "--json",
             url=server, key=key)
    dataset = json.loads(up.stdout)
    assert dataset["num_samples"] == 48 and dataset["name"] == "shapes"
    listed = run(light_python, CLI, "datasets", "ls", url=server, key=key).stdout
    assert dataset["id"] in listed and "shapes" in listed
    jobs = json.loads(run(light_python, CLI, "jobs", "ls", "--json", url=server, key=key).stdout)
    assert jobs == []
    sdk = ("from service.client import Client, NotFound\n"
           "c = Client()\n"
           "print(type(c.get_dataset(sys.argv[1])).__name__, c.health().status)\n"
           "try: c.get_job('nope')\n"
           "except NotFound as e: print('NotFound', e.detail)")
    out = run(light_python, sdk, dataset["id"], url=server, key=key).stdout.split("\n")
    assert out[0] == "DatasetRead ok" and out[1].startswith("NotFound job 'nope'")


def test_a_server_command_says_what_to_install(light_python) -> None:
    done = run(light_python, CLI, "migrate", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the server is not installed here" in done.stderr and "headwise[server]" in done.stderr


def test_tls_is_set_up_only_for_https() -> None:
    """A plain-http client skips loading the CA bundle with a context that trusts nothing (fails closed); an https
    one verifies against the full bundle as httpx does by default."""
    from service.client import Client

    def context(url: str):
        with Client(url, "k") as c:
            return c._http._transport._pool._ssl_context

    plain, tls = context("http://127.0.0.1:9"), context("https://headwise.example")
    assert plain.cert_store_stats()["x509_ca"] == 0 and plain.verify_mode.name == "CERT_REQUIRED"
    assert plain.check_hostname
    assert tls.cert_store_stats()["x509_ca"] > 0 and tls.verify_mode.name == "CERT_REQUIRED" and tls.check_hostname
