"""`headwise serve | api | worker | migrate | keys create|list|revoke | example-dataset` (server side) + the client
commands of service/client/cli.py (datasets, train, jobs, predict).

Never imports worker.*: the worker is started by module string (`python -m celery -A worker.app:app ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.domain import DEFAULT_TEAM

if TYPE_CHECKING:  # the parser and --help load no server module: settings are read by the commands that use them
    import subprocess

    from service.config import Settings

WORKER_APP = "worker.app:app"
# Commands that need the `server` extra (everything else is the client: service/client/cli.py)
SERVER_COMMANDS = ("serve", "api", "worker", "migrate", "keys", "example-dataset", "weights")


def get_settings() -> Settings:
    """The cached server settings, imported on first use (--help and the client commands never load them)."""
    from service.config import get_settings as cached

    return cached()


def migrations_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / "migrations"
    if not (path / "env.py").is_file():
        raise SystemExit(f"migrations not found at {path} (run from a source checkout or the Docker image)")
    return path


def run_migrations(url: str | None = None) -> None:
    """`alembic upgrade head` programmatically against url (default: the configured database)."""
    from alembic import command
    from alembic.config import Config

    settings = get_settings()
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url or settings.DATABASE_URL
    command.upgrade(cfg, "head")


def worker_command(queues: str = "gpu", concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-Q", queues,
            "--concurrency", str(concurrency), "--max-tasks-per-child", "1", "-l", "info"]


def worker_env(settings: Settings) -> dict[str, str]:
    """The same configuration for a child process, with relative defaults resolved."""
    env = dict(os.environ)
    env.update(HEADWISE_DATA_DIR=str(settings.DATA_DIR), HEADWISE_DATABASE_URL=settings.DATABASE_URL,
               HEADWISE_BROKER_URL=settings.BROKER_URL)
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (Celery: warm shutdown), then kill after timeout."""
    import subprocess

    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the embedded worker gets SIGTERM if `headwise serve` dies without cleaning up (kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; other platforms rely on stop_process
        pass


def start_worker(settings: Settings) -> subprocess.Popen:
    import subprocess

    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(worker_command(), env=worker_env(settings), preexec_fn=preexec)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def ensure_admin_key(settings: Settings) -> str | None:
    """On first start without HEADWISE_ADMIN_KEY: create an admin key of team 'default' -> the key (else None)."""
    from service.auth import create_key, load_secret
    from service.db import keys as keys_repo
    from service.db.base import session_scope

    if settings.ADMIN_KEY:
        return None
    with session_scope(settings.DATABASE_URL) as session:
        if keys_repo.count_api_keys(session=session) > 0:
            return None
        _row, key = create_key(session, load_secret(settings), name="admin (created by headwise serve)",
                               team=DEFAULT_TEAM, scopes=["admin"])
    return key


def _run_uvicorn(app_or_path, settings: Settings, factory: bool = False) -> None:
    import uvicorn

    uvicorn.run(app_or_path, host=settings.HOST, port=settings.PORT, factory=factory, log_level="info")


def _banner(settings: Settings, key: str | None) -> None:
    url = f"http://{settings.HOST}:{settings.PORT}"
    print(f"Headwise is starting at {url}\n  API docs: {url}/docs\n  data dir: {settings.DATA_DIR}", flush=True)
    if key:
        print(f"  admin API key (shown once, keep it): {key}", flush=True)
    elif settings.ADMIN_KEY:
        print("  admin API key: the value of HEADWISE_ADMIN_KEY", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.DATABASE_URL)
    key = ensure_admin_key(settings)
    from service.supervisor import WorkerSupervisor

    worker = None if args.no_worker else WorkerSupervisor(lambda: start_worker(settings), stop_process).start()
    # uvicorn re-raises SIGTERM after its graceful shutdown: turn it into SystemExit so `finally` stops the worker
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        from service.api.app import create_app

        _banner(settings, key)
        _run_uvicorn(create_app(settings), settings)
    finally:
        if worker is not None:
            worker.stop()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings(args)
    os.environ.update(HEADWISE_HOST=settings.HOST, HEADWISE_PORT=str(settings.PORT))
    _run_uvicorn("service.api.app:create_app", settings, factory=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    cmd = worker_command(args.queues, args.concurrency)
    os.execve(cmd[0], cmd, worker_env(get_settings()))
    return 0  # pragma: no cover - exec does not return


def cmd_migrate(_args: argparse.Namespace) -> int:
    run_migrations()
    print("database is at the latest revision")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from service.auth import check_scopes, create_key, load_secret
    from service.db import keys as keys_repo
    from service.db.base import session_scope
    from service.db.tables import utcnow

    settings = get_settings()
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    with session_scope(settings.DATABASE_URL) as session:
        if args.keys_command == "create":
            try:
                scopes = check_scopes(args.scopes)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            row, key = create_key(session, load_secret(settings), name=args.name, team=args.team or DEFAULT_TEAM,
                                  scopes=scopes)
            print(f"created key {row.id} ({row.prefix}) team={row.team} scopes={','.join(row.scopes)}",
                  file=sys.stderr)
            print(key)
        elif args.keys_command == "list":
            print(f"{'id':32}  {'prefix':13}  {'team':12}  {'name':20}  {'scopes':40}  status")
            for row in keys_repo.list_api_keys(session=session):
                status = "revoked" if row.revoked_at else f"last used {row.last_used_at or 'never'}"
                print(f"{row.id:32}  {row.prefix:13}  {row.team:12}  {row.name[:20]:20}  "
                      f"{','.join(row.scopes)[:40]:40}  {status}")
        else:
            rows = keys_repo.find_api_keys(session=session, id_or_prefix=args.key)
            if len(rows) != 1:
                why = "no key matches" if not rows else f"{len(rows)} keys match; give more of the prefix or the id"
                print(f"error: {why} {args.key!r}", file=sys.stderr)
                return 1
            keys_repo.revoke_api_key(session=session, key=rows[0], when=utcnow())
            print(f"revoked key {rows[0].id} ({rows[0].prefix}); effective within seconds")
    return 0


def cmd_example_dataset(args: argparse.Namespace) -> int:
    """Write the engine's synthetic shapes dataset (a gated head, a sparse head) and its spec next to it."""
    from service.ml import examples

    out = Path(args.out)
    size = args.image_size or examples.DEFAULT_IMAGE_SIZE
    path = Path(examples.make_example_dataset(out, n=args.n or examples.DEFAULT_N, seed=args.seed, image_size=size))
    epochs = args.epochs or examples.DEFAULT_EPOCHS
    spec = examples.example_spec(image_size=size, epochs=epochs if epochs == "auto" else int(epochs))
    spec_path = path.with_name(path.stem + ".spec.json")
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    print(f"wrote {path} and {spec_path}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """Install pretrained backbone weights into HEADWISE_WEIGHTS_DIR, or list what is installed."""
    from service.ml.weights import WeightsError, import_weights, list_weights

    root = get_settings().WEIGHTS_DIR
    if args.weights_command == "import":
        try:
            info = import_weights(Path(args.file), args.arch, args.name, root, replace=args.replace)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"installed '{info.name}' ({info.arch}, {info.parameters:,} parameters, sha256 {info.sha256}) "
              f"in {root}" + (f"; left out the classifier: {', '.join(info.dropped)}" if info.dropped else ""))
        return 0
    installed = list_weights(root)
    print(f"{'name':32}  {'arch':20}  {'parameters':>11}  {'sha256':16}  source")
    for i in installed:
        print(f"{i.name[:32]:32}  {i.arch:20}  {i.parameters:>11,}  {i.sha256[:16]}  {i.source}")
    print(f"{len(installed)} installed in {root}", file=sys.stderr)
    return 0


def _add_weights_commands(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="pretrained backbone weights in HEADWISE_WEIGHTS_DIR")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    imp = wsub.add_parser("import", help="check a torchvision/timm checkpoint (.pth/.pt/.bin or .safetensors) "
                                         "against an architecture and install it")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--arch", required=True, help="resnet18, resnet50, ... (an unknown one lists them all)")
    imp.add_argument("--name", required=True, help="the name a spec's model.pretrained uses")
    imp.add_argument("--replace", action="store_true", help="replace an installed entry of that name")
    wsub.add_parser("list", help="list installed weights")
    weights.set_defaults(func=cmd_weights)


def _settings(args: argparse.Namespace) -> Settings:
    """The configured settings with --host/--port applied to a copy (the cached singleton is never changed)."""
    update = {name: value for name in ("HOST", "PORT") if (value := getattr(args, name.lower(), None))}
    return get_settings().model_copy(update=update)


def build_parser() -> argparse.ArgumentParser:
    from service.domain import SCOPES

    parser = argparse.ArgumentParser(prog="headwise", description="Headwise: train and serve multi-task CNNs")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="embedded mode: migrations, one supervised worker, the API (SQLite, no Redis)")
    api = sub.add_parser("api", help="the API server only")
    for p in (serve, api):
        p.add_argument("--host", help="default HEADWISE_HOST (127.0.0.1)")
        p.add_argument("--port", type=int, help="default HEADWISE_PORT (8000)")
    serve.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    serve.set_defaults(func=cmd_serve)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="a Celery training worker (one GPU: set CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--queues", default="gpu")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="alembic upgrade head").set_defaults(func=cmd_migrate)
    keys = sub.add_parser("keys", help="manage API keys directly in the database")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", nargs="+", default=["admin"], choices=SCOPES, metavar="SCOPE",
                        help=f"one or more of {', '.join(SCOPES)} (default admin)")
    create.add_argument("--team", default=None, help="default 'default'")
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")
    keys.set_defaults(func=cmd_keys)
    p = sub.add_parser("example-dataset", help="write a synthetic example dataset and its spec")
    p.add_argument("out", metavar="OUT.zip")
    p.add_argument("--n", type=int, default=None, help="number of images (default: the walk-through's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the walk-through's)")
    p.add_argument("--epochs", default=None, help='epochs in the written spec: a number or "auto" '
                                                  "(default: the walk-through's)")
    p.set_defaults(func=cmd_example_dataset)
    _add_weights_commands(sub)
    try:
        from service.client.cli import add_client_commands
    except ImportError:  # pragma: no cover - client commands are optional
        pass
    else:
        add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # httpx imports its own command-line tool (httpx._main: click, rich, pygments) whenever those packages are
    # installed; this process never runs it, and leaving it out saves about half of httpx's import time on every
    # client command (bench/cli_startup.py). A None entry makes that import fail, which httpx handles.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:  # a client-only install (`pip install headwise`) has no server packages
        if args.command not in SERVER_COMMANDS or (exc.name or "").split(".")[0] in ("service", "worker"):
            raise
        raise SystemExit(f"headwise {args.command}: the server is not installed here (no module '{exc.name}'). "
                         "This install has the client only; for the server: pip install torch==2.13.0, then "
                         "pip install 'headwise[server]'") from None


if __name__ == "__main__":
    sys.exit(main())
