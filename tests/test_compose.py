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


def test_nothing_shared_through_a_volume_object_storage_instead(compose: dict[str, Any],
                                                               services: dict[str, Any]) -> None:
    """Issue 14: api replicas and workers share no filesystem; datasets and artifacts live in the S3 service."""
    api_vols = set(_volume_sources(services["api"]).values())
    worker_vols = set(_volume_sources(services["worker"]).values())
    assert not (api_vols & worker_vols), f"api and worker must not share a volume: {api_vols & worker_vols}"
    assert not api_vols, "api replicas keep only their own cache (no named volume shared between replicas)"
    for name in ("api", "worker", "s3-bucket"):
        env = _env(services[name])
        assert env["HEADWISE_STORAGE_URL"].startswith("s3://"), name
        assert env["AWS_ENDPOINT_URL"] == "http://s3:8333", name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_DEFAULT_REGION"], name
    s3 = services["s3"]
    assert "seaweedfs" in s3["image"] and "-s3" in _command(s3) and s3["healthcheck"]["test"]
    assert _volume_sources(s3).get("/data") in (compose.get("volumes") or {}), "the object store persists"


def test_bucket_created_at_start(services: dict[str, Any]) -> None:
    bucket = _env(services["api"])["HEADWISE_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    init = services["s3-bucket"]
    assert str(init.get("restart", "no")) == "no" and init["depends_on"]["s3"]["condition"] == "service_healthy"
    script = " ".join(_command(init))
    assert "create_bucket" in script and f'Bucket="{bucket}"' in script
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"


def test_worker_scales_with_one_gpu_each(services: dict[str, Any]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert [d.get("count") for d in devices] == [1], "one GPU per worker container: scale with --scale worker=N"
    assert "container_name" not in worker and not worker.get("ports"), "a fixed name or port prevents --scale"


def test_two_api_replicas_behind_a_proxy(compose: dict[str, Any], services: dict[str, Any]) -> None:
    api, proxy = services["api"], services["proxy"]
    assert int(api["deploy"]["replicas"]) >= 2 and not api.get("ports"), "replicas are reached via the proxy"
    assert any(str(p).endswith(":8000") for p in proxy.get("ports", []))
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    [conf] = [c for c in proxy["configs"] if c["target"].startswith("/etc/nginx/")]
    text = compose["configs"][conf["source"]]["content"]
    assert "server api:8000 resolve" in text and "proxy_pass http://headwise_api" in text
    assert "proxy_buffering off" in text, "SSE must not be buffered by the proxy"
    assert "proxy_request_buffering off" in text, "uploads must stream through"


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


def test_api_listens_on_all_interfaces(services: dict[str, Any]) -> None:
    api = services["api"]
    assert _env(api).get("HEADWISE_HOST") == "0.0.0.0" and _env(api).get("HEADWISE_PORT") == "8000"
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
