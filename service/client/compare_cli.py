"""`headwise jobs compare JOB_ID`: a comparison job's report as tables (or --json). Standard library + the SDK
(imported by the command), like the rest of the client CLI."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.client.render import fmt_num, table


def comparison_text(report: dict[str, Any]) -> str:
    """The report (GET /v1/jobs/{id}/comparison as JSON) as text: one table of head x variant, the verdicts, the
    best weighting and the compute per variant."""
    state = "complete" if report.get("complete") else f"{report.get('status')}, not complete"
    lines = [f"comparison of job {report['job_id']}: {report['runs_done']}/{report['runs_total']} sub-runs ({state}); "
             f"seeds {', '.join(map(str, report.get('seeds') or []))}"]
    rows = []
    for h in report.get("heads") or []:
        arrow = "^" if h["higher_is_better"] else "v"
        base = h.get("baseline") or {}
        for r in h["results"]:
            span = f"{fmt_num(r['min'])}..{fmt_num(r['max'])}" if r["mean"] is not None else "-"
            rows.append((h["head"], f"{h['metric']} {arrow}", r["variant"], _num(r["mean"]), _num(r["std"]), span,
                         sum(v is not None for v in r["values"]), r["labelled"]))
        rows.append((h["head"], f"{h['metric']} {arrow}", f"baseline ({base.get('kind') or '-'})",
                     _num(base.get("value")), "", "", "", ""))
    if rows:
        lines.append(table(rows, ["head", "metric", "variant", "mean", "std", "min..max", "seeds", "labelled"]))
    verdicts = []
    for h in report.get("heads") or []:
        v, best = h.get("verdict") or {}, h.get("best_weighting") or {}
        fixed = {True: "yes", False: "no", None: "-"}[best.get("fixed_within_noise")] if best else "-"
        verdicts.append((h["head"], v.get("single_task") or "-", _num(v.get("difference")), _num(v.get("noise")),
                         best.get("variant", "-"), fixed,
                         {True: "yes", False: "NO", None: "-"}[h.get("beats_baseline")]))
    if verdicts:
        lines += ["", table(verdicts, ["head", "multi vs single", "difference", "noise", "best weighting",
                                       "fixed within noise", "beats baseline"])]
    overall = report.get("best_weighting")
    if overall:
        lines += ["", f"best weighting overall: {overall['variant']} (mean rank {overall['mean_rank']:.2f}); "
                      f"{overall['note']}"]
    if report.get("registered"):
        reg = report["registered"]
        lines.append(f"registered: {reg['variant']} (seed {reg['seed']}) as version {reg.get('version') or '-'}")
    compute = [(v["name"], f"{v.get('runs_done', 0)}/{v['runs']}", (v.get("compute") or {}).get("seconds", "-"),
                (v.get("compute") or {}).get("epochs", "-"), (v.get("compute") or {}).get("samples", "-"),
                v.get("strategy", "-")) for v in report.get("variants") or []]
    lines += ["", table(compute, ["variant", "runs", "seconds", "epochs", "samples", "weighting"])]
    return "\n".join(lines)


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def cmd_jobs_compare(args: argparse.Namespace, client) -> int:
    with client(args) as c:
        report = c.job_comparison(args.job_id).model_dump(mode="json")
    print(json.dumps(report, indent=2) if args.json else comparison_text(report))
    return 0
