"""Client-side CLI commands, talking to a server over HTTP: `headwise datasets|train|jobs` here, `predict` and
`evaluate` in runs_cli.py, `models` in models_cli.py (shared options and helpers: cli_base.py).

service/cli.py registers them all with `add_client_commands(subparsers)`; each parser sets `func(args) -> int`.
Server URL and key come from --url/--key or HEADWISE_URL/HEADWISE_API_KEY. Startup cost matters (every command
pays it): this module imports only the standard library; the SDK (httpx, pydantic) is imported by the command
that runs, so `headwise --help` never loads it (bench/cli_startup.py measures both).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.client import compare_cli
from service.client.cli_base import client, common_options, guard, print_json, print_table, when
from service.client.render import baseline_table, metrics_table, progress_line, table
from service.client.watch import watch_job
from service.domain import JobStatus

if TYPE_CHECKING:
    from service.api.schemas import JobRead


# -------------------------------------------------------------------------------------------- commands
def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with client(args) as c:
        ds = c.upload_dataset(args.file, name=args.name)
    if args.json:
        print_json(ds)
        return 0
    print(f"dataset {ds.id}  name={ds.name}  format={ds.format}  samples={ds.num_samples}")
    rows = [(col, info.kind, info.labelled, ", ".join(map(str, info.values or []))[:60])
            for col, info in ds.columns.items()]
    print(table(rows, ["column", "kind", "labelled", "values"]))
    return 0


def cmd_datasets_ls(args: argparse.Namespace) -> int:
    with client(args) as c:
        items = c.list_datasets()
    if args.json:
        print_json(items)
        return 0
    rows = [(d.id, d.name, d.format, d.num_samples, ", ".join(d.columns), when(d.created_at)) for d in items]
    print(table(rows, ["id", "name", "format", "samples", "columns", "created"]))
    return 0


def cmd_datasets_audit(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    with client(args) as c:
        result = c.audit(args.dataset_id, spec)
    print_json(result)
    for w in result.warnings:  # the summary a person reads (stderr: stdout stays one JSON document)
        print(f"warning: {w.message}", file=sys.stderr)
    for e in [*result.spec_errors, *result.limit_errors]:
        print(f"error: {e}", file=sys.stderr)
    print("fits: POST /v1/jobs would accept this spec" if result.fits else
          "does not fit: POST /v1/jobs would refuse this spec (422)", file=sys.stderr)
    return 0 if result.fits else 1


def cmd_datasets_rm(args: argparse.Namespace) -> int:
    with client(args) as c:
        c.delete_dataset(args.dataset_id)
    print(f"deleted dataset {args.dataset_id}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    compare = args.compare and json.loads(Path(args.compare[1:]).read_text() if args.compare.startswith("@")
                                          else args.compare)
    with client(args) as c:
        if args.file:  # one call: upload + train
            job = c.train(args.file, spec, args.model, dataset_name=args.dataset_name, compare=compare or None)
            print(f"dataset {job.dataset_id} uploaded")
        else:
            job = c.create_job(args.dataset, args.model, spec, compare=compare or None)
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
        print_table(metrics_table(job.metrics.model_dump(mode="json")))
        print_table(baseline_table(job.metrics.model_dump(mode="json")))
        return 0
    print(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
    return 1


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    with client(args) as c:
        jobs = c.list_jobs()
    if args.json:
        print_json(jobs)
        return 0
    rows = [(j.id, j.status, j.model_name, f"{j.progress.epoch}/{j.progress.epochs or '?'}",
             j.model.version if j.model else "", when(j.created_at)) for j in jobs]
    print(table(rows, ["id", "status", "model", "epoch", "version", "created"]))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with client(args) as c:
        job = c.get_job(args.job_id)
    if args.json:
        print_json(job)
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
    print_table(metrics_table(job.metrics.model_dump(mode="json")))
    print_table(baseline_table(job.metrics.model_dump(mode="json")))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with client(args) as c:
        job = c.cancel_job(args.job_id)
    print(f"job {args.job_id}: {job.status}" + (" (cancel requested)" if job.cancel_requested else ""))
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with client(args) as c:
        return _print_final(watch_job(c, args.job_id))


def cmd_jobs_compare(args: argparse.Namespace) -> int:
    return compare_cli.cmd_jobs_compare(args, client)


# ----------------------------------------------------------------------------------------- registration
def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    common = common_options()

    ds = subparsers.add_parser("datasets", help="upload, list, audit and delete datasets")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="{upload,ls,audit,rm}", required=True)
    p = dsub.add_parser("upload", parents=[common], help="upload a .zip or .npz dataset")
    p.add_argument("file")
    p.add_argument("--name")
    p.set_defaults(func=guard(cmd_datasets_upload))
    p = dsub.add_parser("ls", parents=[common], help="list datasets")
    p.set_defaults(func=guard(cmd_datasets_ls))
    p = dsub.add_parser("audit", parents=[common], help="audit a dataset against a spec (no training): a dry run of a job; exit 1 when it would be refused")
    p.add_argument("dataset_id")
    p.add_argument("--spec", required=True)
    p.set_defaults(func=guard(cmd_datasets_audit))
    p = dsub.add_parser("rm", parents=[common], help="delete a dataset")
    p.add_argument("dataset_id")
    p.set_defaults(func=guard(cmd_datasets_rm))

    p = subparsers.add_parser("train", parents=[common], help="start a training job")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="id of an uploaded dataset")
    source.add_argument("--file", help="a .zip/.npz to upload and train on in one call")
    p.add_argument("--dataset-name", help="with --file: the new dataset's name (default the file's)")
    p.add_argument("--spec", required=True, help="task spec JSON file")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--watch", action="store_true", help="follow progress until the job ends")
    p.add_argument("--compare", help="a comparison block as JSON text or @file (README \"Comparison jobs\")")
    p.set_defaults(func=guard(cmd_train))

    jobs = subparsers.add_parser("jobs", help="list, show, watch, cancel and compare jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="{ls,show,watch,cancel,compare}", required=True)
    p = jsub.add_parser("ls", parents=[common], help="list jobs")
    p.set_defaults(func=guard(cmd_jobs_ls))
    for name, func, text in (("show", cmd_jobs_show, "show a job"), ("watch", cmd_jobs_watch, "follow a job"),
                             ("cancel", cmd_jobs_cancel, "cancel a job"),
                             ("compare", cmd_jobs_compare, "a comparison job's report (a table; --json)")):
        p = jsub.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id")
        p.set_defaults(func=guard(func))

    from service.client.runs_cli import add_run_commands

    add_run_commands(subparsers, common, guard)

    from service.client.models_cli import add_models_commands

    add_models_commands(subparsers, common, guard)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (python -m service.client.cli ...) for use before/without service/cli.py."""
    parser = argparse.ArgumentParser(prog="headwise")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
