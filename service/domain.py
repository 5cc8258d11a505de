"""Words every layer shares (API, database, worker, metrics, client, UI): standard library only, so the light
client can import it."""

from __future__ import annotations

from typing import Any

# Preferred "main" validation metric per head, first present wins.
MAIN_METRICS = ("accuracy", "macro_f1", "f1", "auroc", "auc", "mae", "rmse", "r2", "gated_accuracy")
NON_METRICS = {"loss", "labelled", "count", "n"}


def main_metric(val: dict[str, Any]) -> str | None:
    """Name of the head's main validation metric in one history item's val[task] dict."""
    numeric = [k for k, v in val.items() if k not in NON_METRICS and isinstance(v, int | float)
               and not isinstance(v, bool)]
    for name in MAIN_METRICS:
        if name in numeric:
            return name
    return numeric[0] if numeric else None
