"""`headwise serve` keeps its worker running: a thread starts it, restarts it whenever it exits while serve is
up (after a backoff that doubles from BACKOFF_MIN to BACKOFF_MAX seconds and resets once a worker ran for
STABLE_SECONDS), logs every exit and restart, and stops it (warm shutdown, then kill) when serve stops.

The restarted worker registers afresh (GET /v1/workers); its reaper requeues the job the dead one was running
once that job's lease expires, and the job resumes from its last checkpoint."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger("headwise.serve")

BACKOFF_MIN, BACKOFF_MAX, STABLE_SECONDS = 1.0, 30.0, 60.0


class WorkerSupervisor:
    def __init__(self, start: Callable[[], subprocess.Popen], stop: Callable[[subprocess.Popen], None],
                 poll_seconds: float = 0.5) -> None:
        self._start, self._stop_proc, self.poll_seconds = start, stop, poll_seconds
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headwise-supervisor", daemon=True)

    def start(self) -> WorkerSupervisor:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.proc = self._start()
            self.started_at = time.monotonic()
        log.info("worker started (pid %d)", self.proc.pid)
        print(f"  worker started (pid {self.proc.pid})", flush=True)

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping.wait(self.poll_seconds):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            ran = time.monotonic() - self.started_at
            if ran >= STABLE_SECONDS:
                backoff = BACKOFF_MIN
            message = (f"worker (pid {proc.pid}) exited with code {proc.returncode} after {ran:.0f} s; "
                       f"restarting it in {backoff:.0f} s")
            log.warning(message)
            print(f"  {message}", flush=True)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """No more restarts; stop the current worker."""
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is not None:
            self._stop_proc(proc)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
