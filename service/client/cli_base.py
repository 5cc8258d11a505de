"""What every client command shares: the SDK client from --url/--key, JSON and table printing, the common
options, and the guard that prints server errors. Standard library only at import (the SDK is imported by the
command that runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.client import DEFAULT_URL

if TYPE_CHECKING:
    from service.client.sdk import Client

Command = Callable[[argparse.Namespace], int]


def client(args: argparse.Namespace) -> Client:
    from service.client.sdk import Client

    return Client(args.url, args.key, timeout=args.timeout)


def print_json(data: Any) -> None:
    if isinstance(data, list):
        data = [d.model_dump(mode="json", by_alias=True) if hasattr(d, "model_dump") else d for d in data]
    elif hasattr(data, "model_dump"):
        data = data.model_dump(mode="json", by_alias=True)
    print(json.dumps(data, indent=2, default=str))


def print_table(text: str | None) -> None:
    if text:
        print(text)


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=os.environ.get("HEADWISE_URL", DEFAULT_URL),
                   help="server URL (env HEADWISE_URL; default %(default)s)")
    p.add_argument("--key", default=os.environ.get("HEADWISE_API_KEY"),
                   help="API key (env HEADWISE_API_KEY)")
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    return p


def guard(func: Command) -> Command:
    """Print server errors as 'error: 404 NotFound: ...' and exit 1 (2 for a usage problem)."""

    def run(args: argparse.Namespace) -> int:
        from service.client.errors import HeadwiseError

        try:
            return func(args)
        except HeadwiseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    run.__name__ = func.__name__
    return run
