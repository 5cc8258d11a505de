"""Client-side CLI commands (`headwise datasets|train|jobs|predict|example-dataset`), talking to a server.

service/cli.py registers them with `add_client_commands(subparsers)`; each parser sets `func(args) -> int`.
Server URL and key come from --url/--key or HEADWISE_URL/HEADWISE_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from service.client import TERMINAL_STATUSES, Client, HeadwiseError
from service.domain import JobStatus, main_metric

DEFAULT_URL = "http://127.0.0.1:8000"


# ------------------------------------------------------------------------------------------- rendering
def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_output(out: Any) -> str:
    """One head's prediction as a short cell: 'circle (0.93)', 'true (0.88)', '12.3', 'suppressed: ...'."""
    if not isinstance(out, dict):
        return str(out)
    if out.get("gated"):
        return f"suppressed ({out.get('reason') or 'gate negative'})"
    if "probabilities" in out and isinstance(out["probabilities"], dict):
        p = out["probabilities"].get(str(out.get("label")))
        return f"{out.get('label')} ({p:.2f})" if isinstance(p, int | float) else str(out.get("label"))
    if "probability" in out:
        return f"{str(out.get('label')).lower()} ({float(out['probability']):.2f})"
    if "value" in out:
        v = out["value"]
        return f"{v:.4g}" if isinstance(v, int | float) else str(v)
    return json.dumps(out)


def _fmt_num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def _fmt_seconds(s: Any) -> str:
    if not isinstance(s, int | float):
        return "?"
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_line(event: dict[str, Any], width: int = 24) -> str:
    """'[#####-----] 3/10  loss 0.52  category acc 0.81 | size mae 1.2  412 img/s  ETA 14s'."""
    epoch, epochs = int(event.get("epoch") or 0), int(event.get("epochs") or 0)
    frac = min(1.0, epoch / epochs) if epochs else 0.0
    filled = int(round(frac * width))
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {epoch}/{epochs or '?'}"]
    parts.append(f"val_loss {_fmt_num(event.get('val_loss'))}")
    heads = []
    for task, val in (event.get("val") or {}).items():
        metric = main_metric(val) if isinstance(val, dict) else None
        loss = _fmt_num((val or {}).get("loss")) if isinstance(val, dict) else "-"
        heads.append(f"{task} {metric} {_fmt_num(val.get(metric))}" if metric else f"{task} loss {loss}")
    if heads:
        parts.append(" | ".join(heads))
    if isinstance(event.get("images_per_second"), int | float):
        parts.append(f"{event['images_per_second']:.0f} img/s")
    parts.append(f"ETA {_fmt_seconds(event.get('eta_seconds'))}")
    return "  ".join(parts)


def watch_job(client: Client, job_id: str, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Follow the job's SSE stream, drawing a progress line per epoch; returns the final job."""
    tty = out.isatty()
    cols = shutil.get_terminal_size((120, 20)).columns
    last: str | None = None
    for _attempt in range(5):  # reconnect with Last-Event-ID if the stream drops
        try:
            for ev in client.job_events(job_id, last_event_id=last):
                if ev.event == "epoch" and isinstance(ev.data, dict):
                    last = ev.id or last
                    line = progress_line(ev.data)
                    if tty:
                        out.write("\r\x1b[2K" + line[: cols - 1])
                    else:
                        out.write(line + "\n")
                    out.flush()
                elif ev.event == "status" and isinstance(ev.data, dict):
                    status = ev.data.get("status")
                    if status in TERMINAL_STATUSES:
                        if tty:
                            out.write("\n")
                        return client.get_job(job_id)
                    out.write(("\r\x1b[2K" if tty else "") + f"job {job_id}: {status}" + ("" if tty else "\n"))
                    out.flush()
            break
        except HeadwiseError as exc:
            if exc.status not in (0, 503):
                raise
            time.sleep(1.0)
    if tty:
        out.write("\n")
    return client.wait_for_job(job_id)


# -------------------------------------------------------------------------------------------- commands
def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.key, timeout=args.timeout)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with _client(args) as c:
        ds = c.upload_dataset(args.file, name=args.name)
    if args.json:
        _print_json(ds)
        return 0
    print(f"dataset {ds['id']}  name={ds.get('name')}  format={ds.get('format')}  samples={ds.get('num_samples')}")
    rows = [(col, info.get("kind"), info.get("labelled"), ", ".join(map(str, info.get("values") or []))[:60])
            for col, info in (ds.get("columns") or {}).items()]
    print(table(rows, ["column", "kind", "labelled", "values"]))
    return 0


def cmd_datasets_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        items = c.list_datasets()
    if args.json:
        _print_json(items)
        return 0
    rows = [(d["id"], d.get("name"), d.get("format"), d.get("num_samples"), ", ".join(d.get("columns") or {}),
             d.get("created_at", "")[:19]) for d in items]
    print(table(rows, ["id", "name", "format", "samples", "columns", "created"]))
    return 0


def cmd_datasets_audit(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    with _client(args) as c:
        _print_json(c.audit(args.dataset_id, spec))
    return 0


def cmd_datasets_rm(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_dataset(args.dataset_id)
    print(f"deleted dataset {args.dataset_id}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    with _client(args) as c:
        if args.file:  # one call: upload + train
            job = c.train(args.file, spec, args.model, dataset_name=args.dataset_name)
            print(f"dataset {job.get('dataset_id')} uploaded")
        else:
            job = c.create_job(args.dataset, args.model, spec)
        print(f"job {job['id']} {job.get('status')}  (model {args.model})")
        if not args.watch:
            return 0
        final = watch_job(c, job["id"])
    return _print_final(final)


def _print_final(job: dict[str, Any]) -> int:
    status = job.get("status")
    model = job.get("model") or {}
    if status == JobStatus.SUCCEEDED:
        print(f"job {job['id']} succeeded: model {model.get('name')} version {model.get('version')}")
        _print_metrics(job.get("metrics") or {})
        return 0
    print(f"job {job['id']} {status}" + (f": {job['error']}" if job.get("error") else ""), file=sys.stderr)
    return 1


def _print_metrics(metrics: dict[str, Any]) -> None:
    """Engine metrics: {"val_loss", "tasks": {task: {metric: value}}} (a flat {task: {...}} also works)."""
    rows = []
    tasks = metrics.get("tasks") if isinstance(metrics.get("tasks"), dict) else {}
    flat = {k: v for k, v in metrics.items() if k != "tasks" or not tasks}
    for task, values in {**flat, **tasks}.items():
        if isinstance(values, dict):
            rows += [(task, k, _fmt_num(v)) for k, v in values.items()
                     if isinstance(v, int | float) and not isinstance(v, bool)]
        elif isinstance(values, int | float):
            rows.append(("", task, _fmt_num(values)))
    if rows:
        print(table(rows, ["task", "metric", "value"]))


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        jobs = c.list_jobs()
    if args.json:
        _print_json(jobs)
        return 0
    rows = []
    for j in jobs:
        p = j.get("progress") or {}
        m = j.get("model") or {}
        rows.append((j["id"], j.get("status"), j.get("model_name") or m.get("name"),
                     f"{p.get('epoch', 0)}/{p.get('epochs', '?')}", m.get("version", ""),
                     (j.get("created_at") or "")[:19]))
    print(table(rows, ["id", "status", "model", "epoch", "version", "created"]))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.get_job(args.job_id)
    if args.json:
        _print_json(job)
        return 0
    p = job.get("progress") or {}
    print(f"job {job['id']}  status={job.get('status')}  epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}")
    for key in ("model_name", "dataset_id", "created_at", "started_at", "finished_at", "error"):
        if job.get(key):
            print(f"  {key}: {job[key]}")
    if job.get("model"):
        print(f"  model: {job['model'].get('name')} v{job['model'].get('version')}")
    if job.get("history"):
        print("  last epoch: " + progress_line({**job["history"][-1], "epochs": p.get("epochs")}))
    _print_metrics(job.get("metrics") or {})
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.cancel_job(args.job_id)
    print(f"job {args.job_id}: {(job or {}).get('status', 'cancel requested')}")
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _print_final(watch_job(c, args.job_id))


def cmd_predict(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.predict(args.model, list(args.images), version=args.version, alias=args.alias)
    if args.json:
        _print_json(result)
        return 0
    preds = result.get("predictions") or []
    tasks: list[str] = []
    for p in preds:
        tasks += [t for t in p if t not in tasks]
    rows = [[Path(img).name] + [format_output(p.get(t)) for t in tasks]
            for img, p in zip(args.images, preds, strict=False)]
    m = result.get("model") or {}
    via = f" (alias {result['alias']})" if result.get("alias") else ""
    print(f"model {m.get('name')} version {m.get('version')}{via}")
    print(table(rows, ["image", *tasks]))
    return 0


# ----------------------------------------------------------------------------------------- registration
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=os.environ.get("HEADWISE_URL", DEFAULT_URL),
                   help="server URL (env HEADWISE_URL; default %(default)s)")
    p.add_argument("--key", default=os.environ.get("HEADWISE_API_KEY"),
                   help="API key (env HEADWISE_API_KEY)")
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    return p


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print server errors as 'error: 404 NotFound: ...' and exit 1 (2 for a usage problem)."""

    def run(args: argparse.Namespace) -> int:
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


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    common = _common()

    ds = subparsers.add_parser("datasets", help="upload, list, audit and delete datasets")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="{upload,ls,audit,rm}", required=True)
    p = dsub.add_parser("upload", parents=[common], help="upload a .zip or .npz dataset")
    p.add_argument("file")
    p.add_argument("--name")
    p.set_defaults(func=_guard(cmd_datasets_upload))
    p = dsub.add_parser("ls", parents=[common], help="list datasets")
    p.set_defaults(func=_guard(cmd_datasets_ls))
    p = dsub.add_parser("audit", parents=[common], help="audit a dataset against a spec (no training)")
    p.add_argument("dataset_id")
    p.add_argument("--spec", required=True)
    p.set_defaults(func=_guard(cmd_datasets_audit))
    p = dsub.add_parser("rm", parents=[common], help="delete a dataset")
    p.add_argument("dataset_id")
    p.set_defaults(func=_guard(cmd_datasets_rm))

    p = subparsers.add_parser("train", parents=[common], help="start a training job")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="id of an uploaded dataset")
    source.add_argument("--file", help="a .zip/.npz to upload and train on in one call")
    p.add_argument("--dataset-name", help="with --file: the new dataset's name (default the file's)")
    p.add_argument("--spec", required=True, help="task spec JSON file")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--watch", action="store_true", help="follow progress until the job ends")
    p.set_defaults(func=_guard(cmd_train))

    jobs = subparsers.add_parser("jobs", help="list, show, watch and cancel jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="{ls,show,watch,cancel}", required=True)
    p = jsub.add_parser("ls", parents=[common], help="list jobs")
    p.set_defaults(func=_guard(cmd_jobs_ls))
    for name, func, text in (("show", cmd_jobs_show, "show a job"), ("watch", cmd_jobs_watch, "follow a job"),
                             ("cancel", cmd_jobs_cancel, "cancel a job")):
        p = jsub.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id")
        p.set_defaults(func=_guard(func))

    p = subparsers.add_parser("predict", parents=[common], help="predict every head for images (a table)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=None, help="model version (default latest)")
    p.add_argument("--alias", default=None, help="serve the version this alias points at (e.g. production)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=_guard(cmd_predict))

    from service.client.models_cli import add_models_commands

    add_models_commands(subparsers, common, _guard)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (python -m service.client.cli ...) for use before/without service/cli.py."""
    parser = argparse.ArgumentParser(prog="headwise")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
