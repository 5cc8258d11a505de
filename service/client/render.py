"""Text rendering for the client CLI: tables, prediction cells and the training progress line.

The progress line fits the terminal by leaving out the least important parts (per-head metrics, then the bar),
never by cutting the line, so images/s and the ETA are always shown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service.domain import main_metric


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


def fmt_num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, int | float):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fraction(event: dict[str, Any]) -> float:
    epoch, epochs = int(event.get("epoch") or 0), int(event.get("epochs") or 0)
    batch, batches = event.get("batch"), event.get("batches")
    if not epochs:
        return 0.0
    if isinstance(batch, int) and isinstance(batches, int) and batches > 0:
        # a "progress" event: `batch` of `batches` done in the running epoch `epoch` (1-based)
        return min(1.0, (epoch - 1 + batch / batches) / epochs)
    return min(1.0, epoch / epochs)


def _heads(event: dict[str, Any]) -> list[str]:
    heads = []
    for task, val in (event.get("val") or {}).items():
        if not isinstance(val, dict):
            continue
        metric = main_metric(val)
        heads.append(f"{task} {metric} {fmt_num(val.get(metric))}" if metric else f"{task} loss {fmt_num(val.get('loss'))}")
    return heads


def progress_line(event: dict[str, Any], width: int | None = None, bar: int = 24) -> str:
    """'[#####-----] epoch 3/10 batch 12/40  412 img/s  ETA 14s  val_loss 0.52  category accuracy 0.81'.

    `event` is an "epoch" event (that epoch done, with val metrics) or a "progress" event (`batch` of `batches`
    done in the running epoch `epoch`).
    With `width` (a terminal's columns) parts are left out, least important first, until the line fits."""
    epoch, epochs = int(event.get("epoch") or 0), int(event.get("epochs") or 0)
    where = f"epoch {epoch}/{epochs or '?'}"
    if isinstance(event.get("batch"), int) and isinstance(event.get("batches"), int):
        where = f"epoch {epoch}/{epochs or '?'} batch {event['batch']}/{event['batches']}"
    rate = event.get("images_per_second")
    essentials = [where, f"{rate:.0f} img/s" if isinstance(rate, int | float) else "- img/s",
                  f"ETA {fmt_seconds(event.get('eta_seconds'))}"]
    extras = []
    if event.get("val_loss") is not None:
        extras.append(f"val_loss {fmt_num(event.get('val_loss'))}")
    elif event.get("loss") is not None:
        extras.append(f"loss {fmt_num(event.get('loss'))}")
    extras += _heads(event)
    filled = int(round(_fraction(event) * bar))
    drawn = f"[{'#' * filled}{'-' * (bar - filled)}]"
    candidates = [[drawn, *essentials, *extras[:n]] for n in range(len(extras), -1, -1)] + [essentials]
    for parts in candidates:
        line = "  ".join(parts)
        if width is None or len(line) < width:
            return line
    return "  ".join(essentials)  # narrower than the essentials: let the terminal wrap rather than cut


def metrics_table(metrics: dict[str, Any]) -> str | None:
    """Engine metrics {"val_loss", "tasks": {task: {metric: value}}} (a flat {task: {...}} also works) as a
    task/metric/value table; None when there is nothing numeric."""
    rows = []
    tasks = metrics.get("tasks") if isinstance(metrics.get("tasks"), dict) else {}
    flat = {k: v for k, v in metrics.items() if k != "tasks" or not tasks}
    for task, values in {**flat, **tasks}.items():
        if isinstance(values, dict):
            rows += [(task, k, fmt_num(v)) for k, v in values.items()
                     if isinstance(v, int | float) and not isinstance(v, bool)]
        elif isinstance(values, int | float):
            rows.append(("", task, fmt_num(values)))
    return table(rows, ["task", "metric", "value"]) if rows else None


def baseline_table(metrics: dict[str, Any]) -> str | None:
    """metrics["baselines"] (each head's primary metric beside its trivial baseline) as a table; a head that does
    not beat its baseline says so in capitals. None when the metrics have no baselines (older versions)."""
    base = metrics.get("baselines")
    if not isinstance(base, dict) or not base:
        return None
    rows = []
    for head, b in base.items():
        beats = b.get("beats_baseline")
        verdict = "yes" if beats else "-" if beats is None else "NO: flagged"
        rows.append((head, b.get("metric"), fmt_num(b.get("value")),
                     f"{fmt_num(b.get('baseline'))} ({b.get('kind') or '?'})", verdict))
    return table(rows, ["task", "metric", "model", "trivial baseline", "beats it"])


def baseline_summary(metrics: dict[str, Any] | None) -> str:
    """One cell: 'all 3 beat' / 'flagged: ink' / '' (no baselines recorded)."""
    base = (metrics or {}).get("baselines")
    if not isinstance(base, dict) or not base:
        return ""
    flagged = [h for h, b in base.items() if b.get("beats_baseline") is False]
    return f"flagged: {', '.join(flagged)}" if flagged else f"all {len(base)} beat"
