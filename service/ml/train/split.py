"""The seeded, stratified train/validation split and the per-epoch seeds."""

from __future__ import annotations

import numpy as np


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def stratified_split(spec, data) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split -> (train indices, val indices), both sorted. Stratified on the first classification task
    with one label per sample (unlabelled samples form their own stratum); val samples are spread evenly over
    each stratum."""
    n = len(data.images)
    n_val = int(round(n * spec.training.val_fraction))
    if spec.training.val_fraction > 0:
        n_val = min(max(n_val, 1), n - 2)
    if n_val <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    strata = np.zeros(n, dtype=np.int64)
    first = next((t for t in spec.tasks if t.type != "regression" and data.labels[t.name].values.ndim == 1), None)
    if first is not None:
        lab = data.labels[first.name]
        strata = np.where(lab.mask, lab.values.astype(np.int64), -1)
    perm = np.random.default_rng(spec.training.seed).permutation(n)
    order = perm[np.argsort(strata[perm], kind="stable")]  # grouped by stratum, random within
    picks = ((np.arange(n_val) + 0.5) * n / n_val).astype(np.int64)
    val = np.sort(order[picks])
    return np.setdiff1d(np.arange(n), val), val
