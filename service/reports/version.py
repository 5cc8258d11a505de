"""A model version's reports, made by the worker when training ends and stored with the version's files under
`<artifact dir>/reports/`: validation.json (the validation indices of the trainer's split and the raw predictions
on them), curves.png and one PNG per head. The API only serves these files; no model runs outside serving."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REPORTS_DIR = "reports"
CURVES_FILE = "curves.png"
VALIDATION_FILE = "validation.json"
BATCH = 256


def task_file(task: str) -> str:
    """The file name of a head's plot (task names may hold any character; file names must not)."""
    return f"task-{hashlib.sha256(task.encode()).hexdigest()[:24]}.png"


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_version_reports(result: Any, data: Any, out_dir: Path, title: str, weighting: dict | None = None,
                          device: str = "cpu") -> list[str]:
    """Blocking (the training worker): validation predictions of `result` (a TrainResult) on the trainer's own
    validation split of `data`, stored with their indices, and every plot rendered -> the file names written."""
    import numpy as np

    from service.ml.inference import Predictor
    from service.ml.train import stratified_split
    from service.reports import plots

    _, val_idx = stratified_split(result.spec, data)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    predictor = Predictor.from_result(result, device=device)
    preds: list[dict] = []
    for start in range(0, len(val_idx), BATCH):
        preds += predictor.predict_arrays(np.asarray(data.images[val_idx[start:start + BATCH]]), raw=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    validation = {"indices": val_idx.tolist(), "predictions": preds}
    (out_dir / VALIDATION_FILE).write_text(json.dumps(validation, default=_plain, separators=(",", ":")))
    (out_dir / CURVES_FILE).write_bytes(plots.curves_png(result.history, weighting or {}, title))
    written = [VALIDATION_FILE, CURVES_FILE]
    for name in result.spec.task_names:
        png = plots.task_png(result.spec, data.labels, val_idx, preds, name, title=f"{title} · {name}")
        (out_dir / task_file(name)).write_bytes(png)
        written.append(task_file(name))
    return written
