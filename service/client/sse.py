"""Server-Sent Events (text/event-stream) parsing for the job progress stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    """One Server-Sent Event: `event` is "epoch" or "status"; `data` is the decoded JSON payload."""

    event: str
    data: Any
    id: str | None = None


def iter_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Parse an SSE line stream (text/event-stream) into events; comments/keep-alives are skipped.
    `Event.id` is the id field of that event itself (None when it has none); resume with the last non-None."""
    event, data, ident = "message", [], None
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(event=event, data=payload, id=ident)
            event, data, ident = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value
