"""Small dataset fixtures shared by the engine tests: images as bytes, zip/npz datasets in tmp_path.

Factories (each a fixture returning a callable):
  image_bytes(size=(8, 8), mode="RGB", color=..., fmt="PNG") -> bytes
  make_zip(members: {name: bytes | str}, name="data.zip", symlinks={name: target}, compression=...) -> Path
  make_zip_dataset(rows: [{"image": path, col: value | None}], labels="csv" | "jsonl", name="data.zip",
                   extra={name: bytes}, folder="", missing_images=()) -> Path   # images generated per row
  make_npz(name="data.npz", **arrays) -> Path
Session datasets: example_zip, example_npz (service.ml.examples, n=90).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.ml.examples import make_example_dataset

TINY_ROWS = [
    {"image": "img/0.png", "category": "cat", "is_adult": "true", "age": "3.5", "note": "x"},
    {"image": "img/1.png", "category": "dog", "is_adult": "no", "age": None, "note": None},
    {"image": "img/2.png", "category": None, "is_adult": "1", "age": "7", "note": "y"},
    {"image": "img/3.png", "category": "cat", "is_adult": None, "age": "1e-1", "note": None},
]


def png_bytes(size: tuple[int, int] = (8, 8), mode: str = "RGB", color=None, fmt: str = "PNG", **save) -> bytes:
    if color is None:
        color = {"RGB": (200, 40, 10), "RGBA": (200, 40, 10, 128), "L": 90, "LA": (90, 128)}.get(mode, 1)
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes | str], symlinks: dict[str, str] | None = None,
              compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def labels_text(rows: list[dict], labels: str = "csv") -> str:
    if labels == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    header = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow(["" if r.get(k) is None else r[k] for k in header])
    return buf.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return png_bytes


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    def make(members: dict[str, bytes | str], name: str = "data.zip", symlinks: dict[str, str] | None = None,
             compression: int = zipfile.ZIP_STORED) -> Path:
        return write_zip(tmp_path / name, members, symlinks, compression)

    return make


@pytest.fixture
def make_zip_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(rows: list[dict] | None = None, labels: str = "csv", name: str = "data.zip",
             extra: dict[str, bytes | str] | None = None, folder: str = "", missing_images=(),
             size: tuple[int, int] = (8, 8)) -> Path:
        rows = TINY_ROWS if rows is None else rows
        members: dict[str, bytes | str] = {}
        for k, r in enumerate(rows):
            image = r.get("image")
            if isinstance(image, str) and image not in missing_images and folder + image not in members:
                members[folder + image] = png_bytes(size, color=(20 * k % 255, 100, 50))
        members[f"{folder}labels.{labels}"] = labels_text(rows, labels)
        members.update(extra or {})
        return write_zip(tmp_path / name, members)

    return make


@pytest.fixture
def make_npz(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "data.npz", /, **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return make


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_dataset(tmp_path_factory.mktemp("example") / "shapes.zip", n=90, seed=1)


@pytest.fixture(scope="session")
def example_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_dataset(tmp_path_factory.mktemp("example") / "shapes.npz", n=90, seed=1)
