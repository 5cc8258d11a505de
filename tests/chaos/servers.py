"""PRIVATE Redis and PostgreSQL servers for chaos tests: started on free ports in temp dirs, stopped, killed and
restarted by the tests, always torn down. The shared servers on 6379/5432 are never touched.

PostgreSQL's initdb refuses to run as root: when the tests run as root, initdb/pg_ctl run as the `postgres` OS
user (runuser), in a temp dir that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.harness import free_port

REDIS_SERVER = shutil.which("redis-server")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class PrivateRedis:
    """`redis-server --port <free> --save "" --appendonly no` as a child process (it keeps nothing on disk: a
    restart loses every message, the harshest case for the broker)."""

    def __init__(self) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server not found")
        self.dir = Path(tempfile.mkdtemp(prefix="headwise-redis-"))
        self.port = free_port()
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping())
        except Exception:  # noqa: BLE001
            return False

    def start(self) -> PrivateRedis:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(self.dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(f"redis on port {self.port}", self.ping, 30)
        return self

    def kill(self) -> None:
        """Crash it (SIGKILL): connections drop, everything in memory is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """initdb + pg_ctl in a temp dir on a free port (socket dir inside the temp dir), trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="headwise-pg-"))
        self.data, self.sock, self.log = self.dir / "data", self.dir / "sock", self.dir / "postgres.log"
        self.sock.mkdir()
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chmod(self.dir, 0o755)
            for path in (self.dir, self.sock):
                shutil.chown(path, "postgres", "postgres")
        self._run([self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--no-sync", "--no-instructions"], timeout=120)

    def _run(self, cmd: list, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(c) for c in cmd]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                               f"{self.log_tail()}")
        return result

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PrivatePostgres:
        options = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run([self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start"],
                  timeout=90)
        return self

    def stop(self, mode: str = "immediate") -> None:
        """mode immediate = a crash (no clean shutdown); fast = clean."""
        self._run([self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"], timeout=90)

    def running(self) -> bool:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            if self.data.exists() and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
