"""Structure of docker-compose.yml and the Dockerfile (no Docker engine needed: parsed, not run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: comes with uvicorn[standard]; listed in the test extra too

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the x-headwise anchors and << merges
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _volume_sources(service: dict[str, Any]) -> dict[str, str]:
    """{target path: source volume name} for named-volume mounts, short or long syntax."""
    mounts: dict[str, str] = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            source, _, rest = vol.partition(":")
            mounts[rest.split(":")[0]] = source
        else:
            mounts[vol["target"]] = vol.get("source", "")
    return mounts


def test_has_the_five_services(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_backing_services_have_healthchecks(services: dict[str, Any], name: str) -> None:
    check = services[name].get("healthcheck")
    assert check and check.get("test"), f"{name} needs a healthcheck"
    test = check["test"]
    text = " ".join(test) if isinstance(test, list) else test
    assert ("pg_isready" if name == "postgres" else "redis-cli") in text


def test_migrate_is_one_shot(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert _command(migrate)[-1:] == ["migrate"] and "headwise" in _command(migrate)
    assert str(migrate.get("restart", "no")) == "no", "a one-shot container must not be restarted"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_wait_for_backing_services_and_migration(services: dict[str, Any], name: str) -> None:
    deps = services[name]["depends_on"]
    assert isinstance(deps, dict), "depends_on must use the long form with conditions"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_api_and_worker_commands(services: dict[str, Any]) -> None:
    assert _command(services["api"])[:2] == ["headwise", "api"]
    worker = _command(services["worker"])
    assert worker[:2] == ["headwise", "worker"]
    assert "--queues" in worker and "gpu" in worker[worker.index("--queues") + 1].split(",")


def test_worker_reserves_a_gpu(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices


def test_worker_has_stop_grace_period(services: dict[str, Any]) -> None:
    grace = str(services["worker"].get("stop_grace_period", ""))
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", grace)
    assert grace and match, f"stop_grace_period missing or unparsable: {grace!r}"
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    assert seconds >= 30, "the worker needs time to finish and checkpoint the running epoch"


def test_api_and_worker_share_the_artifacts_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    api_env, worker_env = _env(services["api"]), _env(services["worker"])
    data_dir = api_env["HEADWISE_DATA_DIR"]
    assert worker_env["HEADWISE_DATA_DIR"] == data_dir
    api_vol = _volume_sources(services["api"]).get(data_dir)
    worker_vol = _volume_sources(services["worker"]).get(data_dir)
    assert api_vol and api_vol == worker_vol, "api and worker must mount the same volume at HEADWISE_DATA_DIR"
    assert api_vol in (compose.get("volumes") or {}), (
        f"named volume {api_vol!r} must be declared at top level"
    )


def test_services_use_postgres_and_redis(services: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker"):
        env = _env(services[name])
        assert (
            env["HEADWISE_DATABASE_URL"].startswith("postgresql")
            and "@postgres:" in env["HEADWISE_DATABASE_URL"]
        )
        if name != "migrate":
            assert env["HEADWISE_BROKER_URL"].startswith("redis://redis:")
    assert "HEADWISE_ADMIN_KEY" in _env(services["api"])


def test_api_listens_on_all_interfaces_and_is_published(services: dict[str, Any]) -> None:
    api = services["api"]
    assert _env(api).get("HEADWISE_HOST") == "0.0.0.0"
    assert any(str(p).endswith(":8000") for p in api.get("ports", []))
    assert api.get("healthcheck", {}).get("test"), "api needs a healthcheck on /health"


def test_app_services_build_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker"):
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context in (".", "./"), f"{name} builds the repo's Dockerfile"
    assert DOCKERFILE.is_file()


def test_dockerfile_pins_torch_first_and_installs_the_package() -> None:
    lines = [
        ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    runs = [ln for ln in lines if ln.startswith("RUN ")]
    torch_at = next(i for i, ln in enumerate(runs) if "torch==" in ln)
    install_at = next(i for i, ln in enumerate(runs) if "pip install" in ln and "-e ." in ln)
    assert torch_at < install_at, "torch==<pinned> must be installed before the package"
    assert any(ln.startswith("USER ") and "root" not in ln for ln in lines), "run as a non-root user"
    assert (ROOT / ".dockerignore").is_file()
