"""Client-side CLI commands (`headwise datasets|train|jobs|predict`), talking to a server over HTTP.

service/cli.py registers them with `add_client_commands(subparsers)`; each parser sets `func(args) -> int`.
Server URL and key come from --url/--key or HEADWISE_URL/HEADWISE_API_KEY. Startup cost matters (every command
pays it): this module imports only the standard library; the SDK (httpx, pydantic) is imported by the command
that runs, so `headwise --help` never loads it (bench/cli_startup.py measures both).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.client.render import baseline_table, format_output, metrics_table, progress_line, table
from service.client.watch import watch_job
from service.domain import ACTIVE_STATUSES, JobStatus

if TYPE_CHECKING:
    from service.api.schemas import JobRead
    from service.client.sdk import Client

DEFAULT_URL = "http://127.0.0.1:8000"


# -------------------------------------------------------------------------------------------- commands
def _client(args: argparse.Namespace) -> Client:
    from service.client.sdk import Client

    return Client(args.url, args.key, timeout=args.timeout)


def _print_json(data: Any) -> None:
    if isinstance(data, list):
        data = [d.model_dump(mode="json", by_alias=True) if hasattr(d, "model_dump") else d for d in data]
    elif hasattr(data, "model_dump"):
        data = data.model_dump(mode="json", by_alias=True)
    print(json.dumps(data, indent=2, default=str))


def _print_table(text: str | None) -> None:
    if text:
        print(text)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with _client(args) as c:
        ds = c.upload_dataset(args.file, name=args.name)
    if args.json:
        _print_json(ds)
        return 0
    print(f"dataset {ds.id}  name={ds.name}  format={ds.format}  samples={ds.num_samples}")
    rows = [(col, info.kind, info.labelled, ", ".join(map(str, info.values or []))[:60])
            for col, info in ds.columns.items()]
    print(table(rows, ["column", "kind", "labelled", "values"]))
    return 0


def cmd_datasets_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        items = c.list_datasets()
    if args.json:
        _print_json(items)
        return 0
    rows = [(d.id, d.name, d.format, d.num_samples, ", ".join(d.columns), _when(d.created_at)) for d in items]
    print(table(rows, ["id", "name", "format", "samples", "columns", "created"]))
    return 0


def cmd_datasets_audit(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    with _client(args) as c:
        result = c.audit(args.dataset_id, spec)
    _print_json(result)
    for w in result.warnings:  # the summary a person reads (stderr: stdout stays one JSON document)
        print(f"warning: {w.message}", file=sys.stderr)
    for e in [*result.spec_errors, *result.limit_errors]:
        print(f"error: {e}", file=sys.stderr)
    print("fits: POST /v1/jobs would accept this spec" if result.fits else
          "does not fit: POST /v1/jobs would refuse this spec (422)", file=sys.stderr)
    return 0 if result.fits else 1


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
            print(f"dataset {job.dataset_id} uploaded")
        else:
            job = c.create_job(args.dataset, args.model, spec)
        print(f"job {job.id} {job.status}  (model {args.model})")
        for w in job.warnings:  # the audit's warnings: the job runs, but a head may learn little
            print(f"warning: {w.message}", file=sys.stderr)
        if not args.watch:
            return 0
        final = watch_job(c, job.id)
    return _print_final(final)


def _print_final(job: JobRead) -> int:
    if job.status == JobStatus.SUCCEEDED:
        model = job.model
        print(f"job {job.id} succeeded: model {model.name if model else '?'} version {model.version if model else '?'}")
        _print_table(metrics_table(job.metrics.model_dump(mode="json")))
        _print_table(baseline_table(job.metrics.model_dump(mode="json")))
        return 0
    print(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
    return 1


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        jobs = c.list_jobs()
    if args.json:
        _print_json(jobs)
        return 0
    rows = [(j.id, j.status, j.model_name, f"{j.progress.epoch}/{j.progress.epochs or '?'}",
             j.model.version if j.model else "", _when(j.created_at)) for j in jobs]
    print(table(rows, ["id", "status", "model", "epoch", "version", "created"]))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.get_job(args.job_id)
    if args.json:
        _print_json(job)
        return 0
    print(f"job {job.id}  status={job.status}  epoch {job.progress.epoch}/{job.progress.epochs or '?'}")
    for key in ("model_name", "dataset_id", "created_at", "started_at", "finished_at", "error"):
        if getattr(job, key):
            print(f"  {key}: {getattr(job, key)}")
    if job.model:
        print(f"  model: {job.model.name} v{job.model.version}")
    if job.status_detail:
        print(f"  waiting: {job.status_detail}")
    for w in job.warnings:
        print(f"  warning: {w.message}")
    if job.history:
        print("  last epoch: " + progress_line({**job.history[-1].model_dump(mode="json"), "epochs": job.progress.epochs}))
    _print_table(metrics_table(job.metrics.model_dump(mode="json")))
    _print_table(baseline_table(job.metrics.model_dump(mode="json")))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.cancel_job(args.job_id)
    print(f"job {args.job_id}: {job.status}" + (" (cancel requested)" if job.cancel_requested else ""))
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _print_final(watch_job(c, args.job_id))


def cmd_predict(args: argparse.Namespace) -> int:
    if bool(args.dataset) == bool(args.images):
        print("error: give images, or --dataset ID for a batch prediction of a stored dataset", file=sys.stderr)
        return 2
    if args.dataset:
        return _batch_predict(args)
    with _client(args) as c:
        result = c.predict(args.model, list(args.images), version=args.version, alias=args.alias)
    if args.json:
        _print_json(result)
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
    with _client(args) as c:
        bp = c.create_batch_prediction(args.model, args.dataset, version=args.version, alias=args.alias)
        print(f"batch prediction {bp.id} of model {args.model} version {bp.model.version}", file=sys.stderr)
        try:
            while bp.status in ACTIVE_STATUSES:
                print(f"\r{bp.status}: {100 * bp.fraction:.0f}% ", end="", file=sys.stderr, flush=True)
                time.sleep(1.0)
                bp = c.get_batch_prediction(args.model, bp.id)
        except KeyboardInterrupt:
            c.cancel_batch_prediction(args.model, bp.id)
            print(f"\nbatch prediction {bp.id}: cancel requested", file=sys.stderr)
            return 130
        print(file=sys.stderr)
        if bp.status != "succeeded":
            print(f"batch prediction {bp.id} {bp.status}: {bp.error or ''}", file=sys.stderr)
            return 1
        out = args.out or f"{args.model}-{bp.id}.{args.format}"
        c.download_batch_results(args.model, bp.id, out, filename)
    print(f"{bp.images} images -> {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Queue an evaluation, follow it, print per-head metrics (gated heads: given the true gate and end to end)."""
    with _client(args) as c:
        ev = c.create_evaluation(args.model, args.version, args.dataset)
        print(f"evaluation {ev.id} of model {args.model} version {args.version}", file=sys.stderr)
        try:
            while ev.status in ACTIVE_STATUSES:
                print(f"\r{ev.status}: {100 * ev.fraction:.0f}% ", end="", file=sys.stderr, flush=True)
                time.sleep(1.0)
                ev = c.get_evaluation(args.model, args.version, ev.id)
        except KeyboardInterrupt:
            c.cancel_evaluation(args.model, args.version, ev.id)
            print(f"\nevaluation {ev.id}: cancel requested", file=sys.stderr)
            return 130
    print(file=sys.stderr)
    if args.json:
        _print_json(ev.model_dump(mode="json"))
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
    p = dsub.add_parser("audit", parents=[common], help="audit a dataset against a spec (no training): a dry run of a job; exit 1 when it would be refused")
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

    p = subparsers.add_parser("evaluate", parents=[common], help="score a model version on a labelled dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--dataset", required=True, help="dataset id (labelled)")
    p.set_defaults(func=_guard(cmd_evaluate))

    p = subparsers.add_parser("predict", parents=[common], help="predict every head for images (a table)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=None, help="model version (default latest)")
    p.add_argument("--alias", default=None, help="serve the version this alias points at (e.g. production)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--dataset", help="batch-predict every image of this stored dataset (a job) instead")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="batch result file (--dataset)")
    p.add_argument("--out", help="where to write the batch results (default <model>-<id>.<format>)")
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
