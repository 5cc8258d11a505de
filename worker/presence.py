"""The worker's presence in the registry (service/db/workers.py), kept by a daemon thread of the Celery MAIN
process (started on `worker_ready`, next to the reaper):
- the id "<host>:<pid>:<random>" is put into HEADWISE_WORKER_ID before the pool forks, so the job a child
  claims carries it (jobs.worker) and GET /v1/workers can show each worker's current job;
- every HEARTBEAT_SECONDS the row's last_seen_at moves (re-registering if the row went missing, e.g. the
  database was restored), with the worker's memory in use (resident bytes of the main process and the pool's
  children); its memory budget (HEADWISE_WORKER_MEMORY_BYTES as resolved here) is written at registration; a worker killed with SIGKILL simply stops moving and counts as dead after the lease;
- a clean shutdown marks the row stopped at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

from service.config import get_settings
from service.db import workers as workers_repo
from service.db.base import session_scope

log = logging.getLogger("headwise.worker")

WORKER_ID_ENV = "HEADWISE_WORKER_ID"
FORGET_AFTER_SECONDS = 7 * 24 * 3600  # dead workers are listed for a week, then pruned

_own_id: str | None = None
_thread: threading.Thread | None = None
_stop = threading.Event()


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def device_label() -> str:
    """What this worker trains on, without importing torch in the main process."""
    settings = get_settings()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return settings.TRAIN_DEVICE + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")


def tree_rss(pid: int | None = None, proc: str = "/proc") -> int | None:
    """Resident bytes of process `pid` (default: this one) and all its descendants (the pool's children); None
    where /proc cannot be read."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return None
    for name in names:
        if name.isdigit():
            try:
                with open(f"{proc}/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = set(), [root]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parents.items() if pp == p and c not in tree]
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for p in tree:
        try:
            with open(f"{proc}/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def _register(worker_id: str, queues: list[str]) -> None:
    with session_scope() as session:
        workers_repo.register(session=session, worker_id=worker_id, host=socket.gethostname(), pid=os.getpid(),
                              queues=queues, device=device_label(),
                              memory_budget=get_settings().WORKER_MEMORY_BYTES, memory_used=tree_rss())


def _loop(worker_id: str, queues: list[str], interval: float) -> None:
    registered = False
    while True:
        try:
            if not registered:
                _register(worker_id, queues)
                registered = True
                log.info("worker %s registered (queues %s, device %s)", worker_id, ",".join(queues), device_label())
                with session_scope() as session:
                    workers_repo.prune(session=session, older_than_seconds=FORGET_AFTER_SECONDS)
            else:
                with session_scope() as session:
                    registered = workers_repo.beat(session=session, worker_id=worker_id, memory_used=tree_rss())
                if not registered:
                    log.warning("worker %s: registry row missing; registering again", worker_id)
                    continue
        except Exception as exc:  # noqa: BLE001 - database down: try again next round
            log.warning("worker %s: heartbeat failed: %s", worker_id, exc)
        if _stop.wait(interval):
            return


def start_id() -> str:
    """This process's worker id, put into the environment that the pool's forked children inherit. A fresh
    id per main process: an inherited one (e.g. from a parent shell) would be another worker's."""
    global _own_id
    if _own_id is None:
        _own_id = new_worker_id()
        os.environ[WORKER_ID_ENV] = _own_id
    return _own_id


def start(queues: list[str]) -> str:
    """Start the presence thread (idempotent) and return this worker's id."""
    global _thread
    worker_id = start_id()
    if _thread is not None and _thread.is_alive():
        return worker_id
    _stop.clear()
    interval = get_settings().HEARTBEAT_SECONDS
    _thread = threading.Thread(target=_loop, args=(worker_id, queues, interval), name="headwise-presence",
                               daemon=True)
    _thread.start()
    return worker_id


def stop() -> None:
    """Stop heartbeating and mark this worker stopped (clean shutdown)."""
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    _thread = None
    worker_id = _own_id
    if not worker_id:
        return
    try:
        with session_scope() as session:
            workers_repo.mark_stopped(session=session, worker_id=worker_id)
        log.info("worker %s stopped", worker_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("worker %s: could not mark itself stopped: %s", worker_id, exc)
