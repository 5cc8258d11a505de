"""The comparison plot (issue 15): one panel per head, one bar per variant at its mean validation metric over
seeds, the min..max over seeds as an error bar, each seed as a dot, the trivial baseline as a dashed line; the
panel title carries the metric and the verdict. Drawn from the stored report (service/ml/compare_report.py):
by the worker when the job ends, by the API on request while it runs."""

from __future__ import annotations

from typing import Any

from service.reports.plots import _message_png, _png, plt

COMPARISON_FILE = "comparison.png"
COLORS = {"main": "#1f77b4", "single_task": "#7f7f7f"}


def comparison_png(report: dict[str, Any], title: str = "") -> bytes:
    heads = report.get("heads") or []
    if not heads or not any(r["mean"] is not None for h in heads for r in h["results"]):
        return _message_png("no sub-run finished yet")
    fig, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads) + 1, 3.8), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        results = head["results"]
        for x, r in enumerate(results):
            color = COLORS.get(r["variant"], "#ff7f0e" if "fixed" in r["variant"] else "#2ca02c")
            if r["mean"] is None:
                continue
            low, high = r["mean"] - (r["min"] or r["mean"]), (r["max"] or r["mean"]) - r["mean"]
            ax.bar(x, r["mean"], color=color, alpha=0.75, yerr=[[max(low, 0)], [max(high, 0)]], capsize=4)
            ax.plot([x] * len(r["values"]), [v for v in r["values"]], "k.", markersize=4)
        base = head.get("baseline") or {}
        if base.get("value") is not None:
            ax.axhline(base["value"], color="#d62728", linestyle="--", linewidth=1,
                       label=f"baseline ({base.get('kind')})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(results)), [_short(r["variant"]) for r in results], rotation=30, ha="right",
                      fontsize=8)
        arrow = "higher is better" if head["higher_is_better"] else "lower is better"
        verdict = (head.get("verdict") or {}).get("single_task")
        ax.set_title(f"{head['head']}: {head['metric']} ({arrow})" + (f"\n{verdict}" if verdict else ""), fontsize=9)
        values = [v for r in results for v in r["values"] if v is not None] + (
            [base["value"]] if base.get("value") is not None else [])
        if values and head["higher_is_better"] and max(values) <= 1.0:
            ax.set_ylim(max(0.0, min(values) - 0.1), 1.0)
    fig.suptitle(title or "comparison", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _short(variant: str) -> str:
    return variant.removeprefix("weighting:")
