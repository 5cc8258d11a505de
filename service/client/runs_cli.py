"""`headwise predict` (images, or a stored dataset as a batch-prediction job) and `headwise evaluate`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.client.cli_base import Command, client, print_json
from service.client.render import format_output, table
from service.domain import ACTIVE_STATUSES


def follow(what: str, run: Any, refresh: Callable[[], Any], cancel: Callable[[], Any]) -> Any | None:
    """Poll a batch prediction or evaluation until it ends, its progress on stderr -> the final state; Ctrl-C
    asks the server to cancel it and returns None."""
    try:
        while run.status in ACTIVE_STATUSES:
            print(f"\r{run.status}: {100 * run.fraction:.0f}% ", end="", file=sys.stderr, flush=True)
            time.sleep(1.0)
            run = refresh()
    except KeyboardInterrupt:
        cancel()
        print(f"\n{what} {run.id}: cancel requested", file=sys.stderr)
        return None
    print(file=sys.stderr)
    return run


def cmd_predict(args: argparse.Namespace) -> int:
    if bool(args.dataset) == bool(args.images):
        print("error: give images, or --dataset ID for a batch prediction of a stored dataset", file=sys.stderr)
        return 2
    if args.dataset:
        return _batch_predict(args)
    with client(args) as c:
        result = c.predict(args.model, list(args.images), version=args.version, alias=args.alias)
    if args.json:
        print_json(result)
        return 0
    preds = [{t: out.model_dump(mode="json") for t, out in p.items()} for p in result.predictions]
    tasks: list[str] = []
    for p in preds:
        tasks += [t for t in p if t not in tasks]
    rows = [[Path(img).name] + [format_output(p.get(t)) for t in tasks]
            for img, p in zip(args.images, preds, strict=False)]
    via = f" (alias {result.alias})" if result.alias else ""
    print(f"model {result.model.name} version {result.model.version}{via}")
    print(table(rows, ["image", *tasks]))
    return 0


def _batch_predict(args: argparse.Namespace) -> int:
    """Queue a batch prediction, follow its progress on stderr, then download the results (jsonl or csv)."""
    filename = f"results.{args.format}"
    with client(args) as c:
        bp = c.create_batch_prediction(args.model, args.dataset, version=args.version, alias=args.alias)
        print(f"batch prediction {bp.id} of model {args.model} version {bp.model.version}", file=sys.stderr)
        bp = follow("batch prediction", bp, lambda: c.get_batch_prediction(args.model, bp.id),
                    lambda: c.cancel_batch_prediction(args.model, bp.id))
        if bp is None:
            return 130
        if bp.status != "succeeded":
            print(f"batch prediction {bp.id} {bp.status}: {bp.error or ''}", file=sys.stderr)
            return 1
        out = args.out or f"{args.model}-{bp.id}.{args.format}"
        c.download_batch_results(args.model, bp.id, out, filename)
    print(f"{bp.images} images -> {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Queue an evaluation, follow it, print per-head metrics (gated heads: given the true gate and end to end)."""
    with client(args) as c:
        ev = c.create_evaluation(args.model, args.version, args.dataset)
        print(f"evaluation {ev.id} of model {args.model} version {args.version}", file=sys.stderr)
        ev = follow("evaluation", ev, lambda: c.get_evaluation(args.model, args.version, ev.id),
                    lambda: c.cancel_evaluation(args.model, args.version, ev.id))
    if ev is None:
        return 130
    if args.json:
        print_json(ev.model_dump(mode="json"))
        return 0 if ev.status == "succeeded" else 1
    if ev.status != "succeeded":
        print(f"evaluation {ev.id} {ev.status}: {ev.error or ''}", file=sys.stderr)
        return 1
    heads = ev.heads or {}
    names = [k for h in heads.values() for k in h if k != "labelled"]
    names = list(dict.fromkeys(names))
    rows = [[task, h.get("labelled")] + ["" if h.get(k) is None else f"{h[k]:.4g}" for k in names]
            for task, h in heads.items()]
    print(f"{ev.images} images; gated heads: plain metrics given the true gate, e2e_* end to end")
    print(table(rows, ["head", "labelled", *names]))
    return 0


def add_run_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser,
                     guard: Callable[[Command], Command]) -> None:
    p = subparsers.add_parser("evaluate", parents=[common], help="score a model version on a labelled dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--dataset", required=True, help="dataset id (labelled)")
    p.set_defaults(func=guard(cmd_evaluate))

    p = subparsers.add_parser("predict", parents=[common], help="predict every head for images (a table)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=None, help="model version (default latest)")
    p.add_argument("--alias", default=None, help="serve the version this alias points at (e.g. production)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--dataset", help="batch-predict every image of this stored dataset (a job) instead")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="batch result file (--dataset)")
    p.add_argument("--out", help="where to write the batch results (default <model>-<id>.<format>)")
    p.set_defaults(func=guard(cmd_predict))
