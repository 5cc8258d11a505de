"""`--watch`: follow a job's progress stream and draw it."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, TextIO

from service.client.render import progress_line
from service.domain import TERMINAL_STATUSES

if TYPE_CHECKING:
    from service.api.schemas import JobRead
    from service.client.sdk import Client


def watch_job(client: Client, job_id: str, out: TextIO = sys.stdout) -> JobRead:
    """Follow the job's SSE stream: on a terminal one line redrawn in place for every progress (within an epoch)
    and epoch event, fitted to the terminal's width; otherwise one line per epoch. Returns the final job."""
    from service.client.errors import HeadwiseError

    tty = out.isatty()
    last: str | None = None
    for _attempt in range(5):  # reconnect with Last-Event-ID if the stream drops
        try:
            for ev in client.job_events(job_id, last_event_id=last):
                if ev.event in ("epoch", "progress") and isinstance(ev.data, dict):
                    last = ev.id if ev.event == "epoch" and ev.id else last
                    if tty:
                        width = shutil.get_terminal_size((120, 20)).columns
                        out.write("\r\x1b[2K" + progress_line(ev.data, width=width))
                    elif ev.event == "epoch":
                        out.write(progress_line(ev.data) + "\n")
                    out.flush()
                elif ev.event == "status" and isinstance(ev.data, dict):
                    status = ev.data.get("status")
                    if status in TERMINAL_STATUSES:
                        out.write("\n" if tty else "")
                        return client.get_job(job_id)
                    out.write(("\r\x1b[2K" if tty else "") + f"job {job_id}: {status}" + ("" if tty else "\n"))
                    out.flush()
            break
        except HeadwiseError as exc:
            if exc.status not in (0, 503):
                raise
            time.sleep(1.0)
    out.write("\n" if tty else "")
    return client.wait_for_job(job_id)
