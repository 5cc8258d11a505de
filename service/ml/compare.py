"""Comparison jobs (issue 15): the `compare` block of a training job and the sub-runs it asks for.

A block `{"single_task": true, "weighting": ["fixed", "uncertainty"], "seeds": 2, "register": "main"}` turns one
job into sub-runs trained one after the other on the SAME split (the main spec's seeded split):

- "main": the job's spec as given;
- "weighting:<s>": the main spec with weighting strategy <s> (at its default parameters); a strategy equal to the
  main spec's own is the main run itself and adds nothing;
- "single_task": one model per head, each with the main spec's trunk and that head only (weight 1, fixed
  weighting). A gated head keeps exactly the rows it is trained and scored on in the multi-task model: its
  labels are masked with the gate's labels (known negatives dropped) and the gate head itself is not trained, so
  its metric is the "given the true gate" one, as the multi-task head's main metric is;
- every variant once per seed: spec seed, seed + 1, ... (the seed moves the weight init, shuffling, dropout and
  augmentation; the split stays the main spec's).

Statistics of the finished sub-runs (spread, verdicts, best weighting): service/ml/compare_report.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.ml import gating
from service.ml.spec import Spec, SpecError, parse_spec

MAX_SEEDS = 5
MAIN, SINGLE, WEIGHTING = "main", "single_task", "weighting"


FIELDS = ("single_task", "weighting", "seeds", "register")  # defaults: false, [], 1, "main"


@dataclass(frozen=True)
class SubRun:
    key: str  # "main/s0", "weighting:uncertainty/s1", "single_task:shape/s0" (also its checkpoint folder name)
    variant: str  # "main" | "weighting:<strategy>" | "single_task"
    seed: int  # the spec seed this sub-run trains with
    head: str | None  # single_task: its one head
    spec: Spec


def check_compare(block: Any, spec: Spec) -> dict[str, Any]:
    """The normalised block, or SpecError naming the field (compare.weighting[1], compare.seeds, ...)."""
    from service.ml.weighting import STRATEGIES

    if not isinstance(block, dict):
        raise SpecError([f"compare: must be a JSON object; got {type(block).__name__}"])
    errors = [f"compare.{k}: unknown field; allowed: {', '.join(FIELDS)}" for k in block if k not in FIELDS]
    single, weighting = block.get("single_task", False), block.get("weighting", [])
    seeds, register = block.get("seeds", 1), block.get("register", "main")
    if not isinstance(single, bool):
        errors.append(f"compare.single_task: must be true or false; got {single!r}")
    if not isinstance(weighting, list):
        errors.append(f"compare.weighting: must be a list of strategy names; got {weighting!r}")
        weighting = []
    for i, name in enumerate(weighting):
        if not isinstance(name, str) or name not in STRATEGIES:
            errors.append(f"compare.weighting[{i}]: {name!r} is not a weighting strategy; allowed: "
                          f"{', '.join(STRATEGIES)}")
        elif name in weighting[:i]:
            errors.append(f"compare.weighting[{i}]: '{name}' is listed twice")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        errors.append(f"compare.seeds: must be an integer from 1 to {MAX_SEEDS}; got {seeds!r}")
    if register not in ("main", "best"):
        errors.append(f"compare.register: must be 'main' or 'best'; got {register!r}")
    if spec.training.devices != 1:
        errors.append(f"compare: a comparison trains its sub-runs in one process; set training.devices to 1 (it is "
                      f"{spec.training.devices!r})")
    if single is True and len(spec.tasks) < 2:
        errors.append("compare.single_task: the spec has one head; single-task models need at least two heads")
    if errors:
        raise SpecError(errors)
    norm = {"single_task": single, "weighting": list(weighting), "seeds": seeds, "register": register}
    if len(variants(spec, norm)) < 2 and seeds < 2:
        raise SpecError(["compare: nothing to compare; ask for single_task, another weighting strategy than the "
                         f"spec's ('{spec.weighting.strategy}') or seeds >= 2"])
    return norm


def variants(spec: Spec, block: dict[str, Any]) -> list[str]:
    """Variant names in report order: main, the weighting variants as asked, single_task last."""
    own = spec.weighting.strategy
    out = [MAIN] + [f"{WEIGHTING}:{s}" for s in block.get("weighting", []) if s != own]
    return out + ([SINGLE] if block.get("single_task") else [])


def strategy_of(spec: Spec, variant: str) -> str:
    return variant.split(":", 1)[1] if variant.startswith(WEIGHTING + ":") else (
        "fixed" if variant == SINGLE else spec.weighting.strategy)


def plan(spec: Spec, block: dict[str, Any]) -> list[SubRun]:
    """Every sub-run of the comparison, in training order: per variant, per seed (per head for single_task)."""
    runs: list[SubRun] = []
    for variant in variants(spec, block):
        for k in range(block.get("seeds", 1)):
            seed = spec.training.seed + k
            if variant == SINGLE:
                runs += [SubRun(f"{SINGLE}:{h}/s{k}", SINGLE, seed, h, single_task_spec(spec, h, seed))
                         for h in spec.task_names]
            else:
                runs.append(SubRun(f"{variant}/s{k}", variant, seed, None,
                                   variant_spec(spec, strategy_of(spec, variant), seed)))
    return runs


def plan_summary(spec: Spec, block: dict[str, Any]) -> dict[str, Any]:
    """What the job row keeps from creation on (the API shows it before any sub-run finished)."""
    runs = plan(spec, block)
    return {"variants": [{"name": v, "strategy": strategy_of(spec, v),
                          "runs": sum(1 for r in runs if r.variant == v)} for v in variants(spec, block)],
            "runs": [r.key for r in runs], "seeds": sorted({r.seed for r in runs})}


def variant_spec(spec: Spec, strategy: str, seed: int) -> Spec:
    data = spec.to_json_dict()
    if strategy != spec.weighting.strategy:
        data["weighting"] = {"strategy": strategy, "temperature": spec.weighting.temperature}
    data["training"]["seed"] = seed
    return parse_spec(data)


def single_task_spec(spec: Spec, head: str, seed: int) -> Spec:
    data = spec.to_json_dict()
    task = next(t for t in data["tasks"] if t["name"] == head)
    data["tasks"] = [{**task, "gate": None, "weight": 1.0}]
    data["weighting"] = {"strategy": "fixed"}
    data["training"]["seed"] = seed
    es = data["training"].get("early_stopping")
    if es and es.get("metric", "val_loss") != "val_loss" and not es["metric"].startswith(head + "."):
        es["metric"] = "val_loss"  # it named another head
    return parse_spec(data)


def effective(spec: Spec, data) -> dict[str, np.ndarray]:
    """Per head: own label present and gate chain not known negative (the rows it is trained and scored on)."""
    values = {t: data.labels[t].values for t in spec.task_names}
    return gating.effective_masks(spec, values, {t: data.labels[t].mask.astype(bool) for t in spec.task_names})


def sub_data(spec: Spec, data, run: SubRun):
    """The data a sub-run trains on: all of it, or for single_task its head with the gate's masking applied."""
    if run.head is None:
        return data
    from service.ml.data import Labels, TrainingData

    lab = data.labels[run.head]
    return TrainingData(images=data.images, labels={run.head: Labels(lab.values, effective(spec, data)[run.head])})


def validation_predictions(result, images: np.ndarray, rows: dict[str, np.ndarray]) -> dict[str, list]:
    """Predictions (label units) of a trained result on each head's scored validation rows, as JSON lists (the
    bootstrap of compare_report re-scores them)."""
    from service.ml.inference import Predictor

    predictor = Predictor.from_result(result)
    needed = np.unique(np.concatenate([r for r in rows.values() if len(r)] or [np.zeros(0, np.int64)]))
    out: dict[str, list[np.ndarray]] = {t: [] for t in result.spec.task_names}
    for s in range(0, len(needed), 256):
        o = predictor.outputs(np.asarray(images[needed[s:s + 256]]))
        for t in out:
            out[t].append(o[t])
    pos = {int(i): j for j, i in enumerate(needed)}
    preds: dict[str, list] = {}
    for t in result.spec.tasks:
        if t.name not in rows or not len(needed):
            continue
        p = t.head.predictions(t, np.concatenate(out[t.name]), result.normalization.get(t.name))
        p = np.asarray(p)[[pos[int(i)] for i in rows[t.name]]]
        preds[t.name] = p.tolist() if p.dtype.kind in "iub" else np.round(p.astype(np.float64), 6).tolist()
    return preds


def scored_rows(spec: Spec, data, val_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per head: the validation rows it is scored on (own label, gate chain not known negative), in order."""
    eff = effective(spec, data)
    return {t: val_idx[eff[t][val_idx]] for t in spec.task_names}
