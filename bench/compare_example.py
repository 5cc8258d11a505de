"""The comparison of the README (issue 15): "does multi-task help, and which weighting?" on the example dataset.

    python bench/compare_example.py [--json bench/results/compare_example.json] [--n 600] [--image-size 32]
        [--epochs 8] [--seeds 2] [--weighting fixed,uncertainty,gradnorm] [--no-single-task]

Writes the example dataset (service/ml/examples.py, `headwise example-dataset`), takes its spec (example_spec) and
runs exactly what a comparison job runs in the worker (service/ml/compare_run.run_comparison: the same sub-runs on
the same split, the same report), in this process on the CPU, then prints the report as `headwise jobs compare`
prints it and the JSON (with the machine and settings). Timing figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, machine  # noqa: E402
from service.client.compare_cli import comparison_text  # noqa: E402
from service.ml.compare import check_compare, plan_summary  # noqa: E402
from service.ml.compare_run import run_comparison  # noqa: E402
from service.ml.data import load_training_data  # noqa: E402
from service.ml.examples import example_spec, make_example_dataset  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--weighting", default="fixed,uncertainty,gradnorm")
    ap.add_argument("--no-single-task", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = make_example_dataset(Path(tmp) / "example.zip", n=args.n, image_size=args.image_size)
        raw = example_spec(image_size=args.image_size, epochs=args.epochs)
        raw["training"]["device"] = "cpu"
        spec, data = load_training_data(parse_spec(raw), path, Path(tmp) / "cache")
        block = check_compare({"single_task": not args.no_single_task, "seeds": args.seeds,
                               "weighting": [w for w in args.weighting.split(",") if w]}, spec)
        plan = plan_summary(spec, block)
        started = time.perf_counter()
        _, state = run_comparison(spec, block, data, device="cpu", checkpoint_root=Path(tmp) / "runs")
        seconds = time.perf_counter() - started
    report = {"job_id": "bench", "status": "succeeded", "complete": True, "runs_done": len(state["runs"]),
              "runs_total": len(plan["runs"]), "compare": block, "seeds": plan["seeds"], **state["report"],
              "registered": state["registered"]}
    print(comparison_text(report))
    print()
    emit({"benchmark": "compare_example", "machine": machine("cpu"),
          "config": {"n": args.n, "image_size": args.image_size, "epochs": args.epochs, "compare": block},
          "wall_seconds": round(seconds, 1), "report": {k: v for k, v in report.items() if k != "job_id"}},
         args.json)


if __name__ == "__main__":
    main()
