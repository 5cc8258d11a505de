"""Batch prediction streams (issue 13: bounded memory for 100k images): worker.batch_predict.write_results decodes
and predicts CHUNK images at a time and appends their lines to the open files, so the traced memory grows by a few
bytes per image (the zip's member index), not by the predictions; a stop before a chunk returns None."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.ml.inference import Predictor
from service.serving.batch_input import unlabelled_table
from tests.api.conftest import example_zip, trained_artifact  # noqa: F401 - fixtures
from tests.worker.test_evaluate_memory import peak
from worker.batch_predict import CHUNK, csv_columns, write_results


def images_zip(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
            z.writestr(f"img/{i:06d}.png", buf.getvalue())
    return path


@pytest.fixture(scope="module")
def predictor(trained_artifact) -> Predictor:  # noqa: F811
    return Predictor.load(trained_artifact, device="cpu")


def run(predictor: Predictor, archive: Path, out: Path, stop=lambda: False) -> tuple[int | None, list[dict]]:
    table = unlabelled_table(archive)
    steps: list[dict] = []
    with open(out / "r.jsonl", "w") as jsonl, open(out / "r.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, csv_columns(predictor.spec))
        writer.writeheader()
        done = write_results(predictor, archive, table, jsonl, writer, stop, steps.append)
    return done, steps


def test_every_image_once_in_order(predictor: Predictor, tmp_path: Path) -> None:
    archive = images_zip(tmp_path / "a.zip", CHUNK + 7)  # a full chunk and a partial one
    done, steps = run(predictor, archive, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert done == CHUNK + 7 == len(lines) and [s["step"] for s in steps] == [CHUNK + 1, CHUNK + 8]
    assert [x["path"] for x in lines] == [f"img/{i:06d}.png" for i in range(CHUNK + 7)]
    assert set(lines[0]) == {"path", *predictor.spec.task_names}
    with open(tmp_path / "r.csv") as f:
        assert len(list(csv.DictReader(f))) == CHUNK + 7


def test_a_stop_before_a_chunk_returns_none(predictor: Predictor, tmp_path: Path) -> None:
    archive = images_zip(tmp_path / "a.zip", CHUNK + 7)
    calls: list[int] = []
    done, _ = run(predictor, archive, tmp_path, stop=lambda: calls.append(1) or len(calls) > 1)
    assert done is None and len((tmp_path / "r.jsonl").read_text().splitlines()) == CHUNK


def keep_all(predictor: Predictor, archive: Path) -> list[dict]:
    """What a non-streaming job would do: every image's answer kept until the end."""
    from service.ml.data.images import iter_images

    table = unlabelled_table(archive)
    images = [img for _, img in iter_images(archive, table)]
    return [{"path": k, **h} for k, h in zip(table.keys, predictor.predict(images), strict=True)]


def test_memory_does_not_grow_with_the_images(predictor: Predictor, tmp_path: Path) -> None:
    small, large = images_zip(tmp_path / "s.zip", 2 * CHUNK), images_zip(tmp_path / "l.zip", 8 * CHUNK)
    run(predictor, small, tmp_path)  # warm-up (lazy imports, caches)

    new = [peak(lambda a=a: run(predictor, a, tmp_path)) for a in (small, large)]
    old = [peak(lambda a=a: keep_all(predictor, a)) for a in (small, large)]
    per_image_new, per_image_old = ((p[1] - p[0]) / (6 * CHUNK) for p in (new, old))
    print(f"traced peak growth per image: streamed {per_image_new:.0f} B, keep-all {per_image_old:.0f} B; "
          f"peaks streamed {new}, keep-all {old}")
    # what grows: the table's keys and the zip's member index (~70 MB for 100k images), never images or results
    assert per_image_new < 1000 and per_image_new < per_image_old / 3, (new, old)
