"""The comparison report from finished sub-runs: per head and variant the validation metric and its spread over
seeds, the multi-task vs single-task verdict, the best weighting (and whether the plain sum "fixed" is within
noise of it), the trivial baseline and the compute each variant cost. numpy only; the worker calls it after every
sub-run and stores the result in the job row (the API only serves it).

The verdict rule (one place: `verdict`): d = the difference of the seed means, multi-task minus single-task, signed
so that d > 0 means multi-task is better (for error metrics like mae the sign is flipped). Its noise is
  noise = sqrt(bootstrap_sd^2 + seed_se^2)
- bootstrap_sd: a paired bootstrap over the validation rows (BOOTSTRAP resamples, fixed seed): each resample
  re-scores every seed's stored predictions of both variants on the same rows and takes the difference of the
  seed means; its standard deviation is the noise of a finite validation set (this is how noise is estimated
  with seeds = 1);
- seed_se: the standard error of that difference over seeds, sqrt(s_m^2/n_m + s_s^2/n_s) (sample std), 0 with one
  seed.
"multi-task better" when d > max(2 noise, tol), "multi-task worse" when d < -max(2 noise, tol), else "within
noise"; tol is the smallest difference worth a verdict: 0.005 for scores in [0, 1] (accuracy, F1, AUC), 1 % of
the single-task value for errors in label units (mae, rmse). The same rule says whether "fixed" is within noise
of the best weighting.

Best weighting: among main and the weighting variants, per head the best mean; overall the variant with the best
mean rank across heads (rank 1 = best on a head; ties share the average rank), ties -> main, then the order asked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.ml.baselines import beats as beats_baseline
from service.ml.baselines import primary_metric
from service.ml.compare import MAIN, SINGLE, WEIGHTING
from service.ml.metrics import higher_is_better

BOOTSTRAP = 300
SEED = 12345
BOUNDED_TOL = 0.005
RELATIVE_TOL = 0.01
RULE = ("d = multi-task mean - single-task mean (sign flipped for error metrics, so d > 0 = multi-task better); "
        "noise = sqrt(bootstrap_sd^2 + seed_se^2) with bootstrap_sd from a paired bootstrap of the validation rows "
        f"({BOOTSTRAP} resamples) and seed_se the standard error over seeds (0 with one seed); verdict 'multi-task "
        "better' if d > max(2 noise, tol), 'multi-task worse' if d < -max(2 noise, tol), else 'within noise'; "
        f"tol = {BOUNDED_TOL} for scores in [0, 1], {RELATIVE_TOL:.0%} of the single-task value for errors")
BEST_RULE = ("the weighting variant (main included) with the best mean rank across heads; ties -> main, then the "
             "order asked; single-task models are never registered")


def head_metric(task) -> str:
    """The head's primary metric: the one its trivial baseline is scored on (service/ml/baselines.py)."""
    return primary_metric(task)


def spread(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "min": float(min(v)), "max": float(max(v))}


def tolerance(metric: str, reference: float) -> float:
    return BOUNDED_TOL if higher_is_better(metric) else RELATIVE_TOL * abs(reference)


def verdict(d: float, noise: float, tol: float) -> str:
    """d: signed difference (> 0 = multi-task better), noise and tol as in the module doc."""
    limit = max(2.0 * noise, tol)
    return "multi-task better" if d > limit else "multi-task worse" if d < -limit else "within noise"


def paired_noise(score, y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The noise of mean(score(a_i)) - mean(score(b_j)): bootstrap over rows (paired) and the seed spread."""
    n = len(y)
    if n == 0:
        return 0.0
    rng = np.random.default_rng(SEED)
    diffs = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        sa = [score(y[idx], p[idx]) for p in a]
        sb = [score(y[idx], p[idx]) for p in b]
        if None in sa or None in sb:
            continue
        diffs.append(np.mean(sa) - np.mean(sb))
    boot = float(np.std(diffs)) if len(diffs) > 1 else 0.0
    full_a = [score(y, p) for p in a]
    full_b = [score(y, p) for p in b]
    se = 0.0
    for full in (full_a, full_b):
        v = [x for x in full if x is not None]
        if len(v) > 1:
            se += float(np.var(v, ddof=1)) / len(v)
    return math.sqrt(boot**2 + se)


def compare_pair(task, metric: str, y, runs_a: list[dict], runs_b: list[dict]) -> dict[str, Any] | None:
    """Signed difference and noise of variant a against b on one head (None without predictions on both)."""
    a = [np.asarray(r["preds"][task.name]) for r in runs_a if task.name in r.get("preds", {})]
    b = [np.asarray(r["preds"][task.name]) for r in runs_b if task.name in r.get("preds", {})]
    va = [r["metrics"][task.name]["value"] for r in runs_a if task.name in r.get("metrics", {})]
    vb = [r["metrics"][task.name]["value"] for r in runs_b if task.name in r.get("metrics", {})]
    ma, mb = spread(va)["mean"], spread(vb)["mean"]
    if not a or not b or ma is None or mb is None:
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    noise = paired_noise(lambda yy, pp: task.head.scores(task, yy, pp)[metric], y, a, b)
    d = sign * (ma - mb)
    return {"difference": d, "noise": noise, "tol": tolerance(metric, mb),
            "verdict": verdict(d, noise, tolerance(metric, mb))}


def _ranks(means: dict[str, float], higher: bool) -> dict[str, float]:
    order = sorted(means.values(), reverse=higher)
    return {v: float(np.mean([i + 1 for i, x in enumerate(order) if x == m])) for v, m in means.items()}


def build_report(spec, plan: dict[str, Any], runs: dict[str, dict], truth: dict[str, np.ndarray],
                 baselines: dict[str, dict]) -> dict[str, Any]:
    """The report of the finished sub-runs `runs` (key -> record, see compare_run.record); truth: per head the
    labels of its scored validation rows, in the order the stored predictions follow; baselines: per head
    {"kind", "value"} (service/ml/baselines.py)."""
    names = [v["name"] for v in plan["variants"]]
    by_variant = {v: [r for r in runs.values() if r["variant"] == v] for v in names}
    weight_variants = [v for v in names if v == MAIN or v.startswith(WEIGHTING + ":")]
    heads, ranks = [], {v: [] for v in weight_variants}
    fixed = next((v for v in weight_variants if plan_strategy(plan, v) == "fixed"), None)
    for t in spec.tasks:
        metric = head_metric(t)
        higher = higher_is_better(metric)
        results = []
        for v in names:
            rs = [r for r in by_variant[v] if t.name in r["metrics"]]
            values = [r["metrics"][t.name]["value"] for r in sorted(rs, key=lambda r: r["seed"])]
            labelled = max((r["metrics"][t.name]["labelled"] for r in rs), default=0)
            results.append({"variant": v, **spread(values), "values": values, "labelled": labelled})
        means = {r["variant"]: r["mean"] for r in results if r["mean"] is not None}
        y = truth.get(t.name, np.zeros(0))
        single = compare_pair(t, metric, y, by_variant[MAIN], by_variant.get(SINGLE, [])) if SINGLE in names else None
        wmeans = {v: means[v] for v in weight_variants if v in means}
        best = None
        if wmeans:
            for v, rank in _ranks(wmeans, higher).items():
                ranks[v].append(rank)
            top = max(wmeans, key=lambda v: (wmeans[v] if higher else -wmeans[v], -names.index(v)))
            near = None
            if fixed is not None and fixed in wmeans:
                pair = compare_pair(t, metric, y, by_variant[top], by_variant[fixed]) if top != fixed else None
                near = True if top == fixed else (pair["verdict"] != "multi-task better" if pair else None)
            best = {"variant": top, "strategy": plan_strategy(plan, top), "mean": wmeans[top],
                    "fixed_within_noise": near}
        base = baselines.get(t.name)
        main_mean = means.get(MAIN)
        beats = beats_baseline(metric, main_mean, (base or {}).get("value"))  # the margin rule of baselines.py
        heads.append({
            "head": t.name, "metric": metric, "higher_is_better": higher,
            "labelled": int(len(y)), "baseline": base, "beats_baseline": beats, "results": results,
            "verdict": {"single_task": single["verdict"] if single else None,
                        "difference": single["difference"] if single else None,
                        "noise": single["noise"] if single else None,
                        "tol": single["tol"] if single else None,
                        "method": "seeds+bootstrap" if len(plan.get("seeds", [])) > 1 else "bootstrap"},
            "best_weighting": best,
        })
    return {"heads": heads, "best_weighting": _overall_best(plan, weight_variants, ranks, heads, names),
            "variants": _compute(plan, by_variant), "verdict_rule": RULE, "register_rule": BEST_RULE}


def plan_strategy(plan: dict[str, Any], variant: str) -> str:
    return next(v["strategy"] for v in plan["variants"] if v["name"] == variant)


def _overall_best(plan, weight_variants, ranks, heads, names) -> dict[str, Any] | None:
    scored = {v: float(np.mean(r)) for v, r in ranks.items() if r and len(r) == len(heads)}
    if len(scored) < 2:
        return None
    top = min(scored, key=lambda v: (scored[v], 0 if v == MAIN else 1, names.index(v)))
    near = [h["best_weighting"]["fixed_within_noise"] for h in heads if h["best_weighting"]]
    fixed_ok = None if any(x is None for x in near) or not near else all(near)
    note = ("the plain sum (fixed) is within noise of the best weighting on every head" if fixed_ok else
            "a learned weighting beats the plain sum (fixed) beyond noise on at least one head" if fixed_ok is False
            else "'fixed' was not among the variants")
    return {"variant": top, "strategy": plan_strategy(plan, top), "mean_rank": scored[top],
            "ranks": scored, "fixed_within_noise": fixed_ok, "note": note}


def best_variant(report: dict[str, Any]) -> str:
    """The variant `register: "best"` registers (BEST_RULE); main when there is no ranking."""
    best = report.get("best_weighting")
    return best["variant"] if best else MAIN


def _compute(plan, by_variant) -> list[dict[str, Any]]:
    out = []
    for v in plan["variants"]:
        rs = by_variant.get(v["name"], [])
        out.append({**v, "runs_done": len(rs), "compute": {
            "seconds": round(sum(r["seconds"] for r in rs), 2), "epochs": sum(r["epochs"] for r in rs),
            "samples": sum(r["samples"] for r in rs)}})
    return out
