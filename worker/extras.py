"""What the worker adds to a trained model's artifact besides the weights: the ONNX export (checked against
torch) and the version's reports (validation predictions and plots). Engine modules are imported lazily here,
as in worker/jobs.py, so the Celery parent never loads torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from service.config import Settings
from service.db.tables import Job

log = logging.getLogger("headwise.worker")


def write_reports(job: Job, result: Any, data: Any, artifact_dir: Path) -> None:
    """Validation predictions (with their indices) and every plot, stored with the version's files: the API only
    serves them (service/reports/version.py). Costs one pass over the validation split plus the rendering."""
    from service.reports.version import REPORTS_DIR, write_version_reports

    started = time.monotonic()
    weighting = result.spec.to_json_dict().get("weighting")  # the registered model's (a comparison may register
    # another weighting than the job spec's)
    written = write_version_reports(result, data, artifact_dir / REPORTS_DIR, f"{job.model_name} · job {job.id[:8]}",
                                    weighting if isinstance(weighting, dict) else None)
    log.info("job %s: %d report files in %.1f s", job.id, len(written), time.monotonic() - started)


def export_onnx(result: Any, data: Any, settings: Settings) -> tuple[dict[str, bytes], dict[str, Any]]:
    """model.onnx for the artifact, checked against torch on the validation images (service/ml/export.py); a
    mismatch raises ExportError, which fails the job with its message. HEADWISE_EXPORT_ONNX=false skips it."""
    if not settings.EXPORT_ONNX:
        return {}, {}
    from service.ml.export import ONNX_FILE, check_images, export_checked
    from service.ml.inference import Predictor

    started = time.monotonic()
    onnx, report = export_checked(Predictor.from_result(result), check_images(result.spec, data))
    report["seconds"] = round(time.monotonic() - started, 3)
    log.info("exported model.onnx (max abs diff vs torch %.2g on %d images)",
             max(report["max_abs_diff"].values(), default=0.0), report["images"])
    return {ONNX_FILE: onnx}, {"onnx": report}
