"""Evaluation jobs score a dataset a chunk at a time (worker.evaluate.score): the metrics and plots equal the
whole-dataset computation (service.ml.metrics.evaluate over every output, task_png over every prediction dict), and
the traced memory grows by a few bytes per image instead of holding every output and prediction."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from service.ml.data import load_training_data
from service.ml.inference import Predictor
from service.ml.metrics import evaluate
from service.reports.plots import task_png
from tests.api.conftest import example_zip, trained_artifact  # noqa: F401 - fixtures
from worker.evaluate import CHUNK, score

TITLE = "shapes v1"


@pytest.fixture(scope="module")
def base(tmp_path_factory, trained_artifact):  # noqa: F811
    predictor = Predictor.load(trained_artifact, device="cpu")
    root = tmp_path_factory.mktemp("eval")
    from service.ml.examples import make_example_dataset

    path = make_example_dataset(root / "e.zip", n=64, seed=3, image_size=16)
    spec, data = load_training_data(predictor.spec, path, root / "cache")
    return predictor, spec, data, root


def tiled(base, copies: int):
    """The 64-image dataset `copies` times over; images in a read-only memmap, as the worker's image cache."""
    _predictor, _spec, data, root = base
    images = np.lib.format.open_memmap(root / f"x{copies}.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(data.images) * copies, *data.images.shape[1:]))
    images[:] = np.concatenate([np.asarray(data.images)] * copies)
    images.flush()
    labels = {t: replace(lab, values=np.concatenate([lab.values] * copies), mask=np.concatenate([lab.mask] * copies))
              for t, lab in data.labels.items()}
    return replace(data, images=np.load(root / f"x{copies}.npy", mmap_mode="r"), labels=labels)


def whole(predictor, spec, data, render: bool = True):
    """The computation evaluation jobs did before: every output and prediction dict kept, then scored at once."""
    n = len(data.images)
    outputs: dict[str, list] = {t: [] for t in spec.task_names}
    preds: list[dict] = []
    for start in range(0, n, CHUNK):
        batch = np.asarray(data.images[start:start + CHUNK])
        for name, out in predictor.outputs(batch).items():
            outputs[name].append(out)
        preds += predictor.predict_arrays(batch, raw=True)
    joined = {t: np.concatenate(v) for t, v in outputs.items()}
    heads = evaluate(spec, joined, {t: lab.values for t, lab in data.labels.items()},
                     {t: lab.mask for t, lab in data.labels.items()}, predictor.normalization)
    if not render:
        return heads, preds
    return heads, {t: task_png(spec, data.labels, np.arange(n), preds, t, title=f"{TITLE}: {t}")
                   for t in spec.task_names}


def test_streamed_scores_and_plots_equal_the_whole_dataset_computation(base) -> None:
    predictor, spec, _data, _root = base
    data = tiled(base, 5)  # 320 images: two chunks, the second partial
    heads, plots = score(predictor, spec, data, TITLE, lambda: False, lambda _item: None)
    old_heads, old_plots = whole(predictor, spec, data)
    assert heads == old_heads  # bit for bit (no float is recomputed in another order)
    assert set(heads) == set(spec.task_names) and heads["category"]["labelled"] > 0
    assert {t: p.png() for t, p in plots.items()} == old_plots


def peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_dataset(base) -> None:
    predictor, spec, _data, _root = base
    small, large = tiled(base, 8), tiled(base, 32)  # 512 and 2048 images: both several chunks
    extra = len(large.images) - len(small.images)
    quiet = (lambda: False, lambda _item: None)
    score(predictor, spec, small, TITLE, *quiet)  # warm-up (lazy imports, caches)
    # what each keeps until the end (rendering the PNGs is the same work either way, and slow under tracemalloc)
    new = [peak(lambda d=d: score(predictor, spec, d, TITLE, *quiet)) for d in (small, large)]
    old = [peak(lambda d=d: whole(predictor, spec, d, render=False)) for d in (small, large)]
    per_image_new, per_image_old = (new[1] - new[0]) / extra, (old[1] - old[0]) / extra
    print(f"traced peak growth per image: streamed {per_image_new:.0f} B, whole-dataset {per_image_old:.0f} B; "
          f"peaks streamed {new}, whole {old}")
    # what stays per image: label + prediction per head (roc_auc ranks every score) and the plots' class names
    assert per_image_new < 200, (new, old)
    assert per_image_new < per_image_old / 5, (new, old)


def test_a_stop_between_chunks_returns_nothing(base) -> None:
    predictor, spec, _data, _root = base
    data = tiled(base, 5)
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1  # before the second chunk

    steps: list[dict] = []
    assert score(predictor, spec, data, TITLE, stop, steps.append) is None
    assert len(steps) == 1 and steps[0]["step"] == CHUNK + 1
