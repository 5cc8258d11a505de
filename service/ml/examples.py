"""A small synthetic, partially labelled multi-task dataset ("shapes") and a matching spec.

Each image is dark noise, with a bright circle or square drawn on it unless its category is "none".
Columns: category (none/circle/square, ~10% missing), is_big (binary, ~20% missing), size (regression: shape
diameter / image size; only for circle/square, gated on them, ~25% of those missing), hue (regression: the
shape's hue in [0, 0.7]; labelled on ~15% of rows only). Learnable by a small CNN in a few epochs.
"""

from __future__ import annotations

import colorsys
import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("none", "circle", "square")
# the README walk-through: `headwise example-dataset` writes this many images of this size and a spec with these
# epochs (bench/walkthrough.py times it end to end through the service)
DEFAULT_N, DEFAULT_IMAGE_SIZE, DEFAULT_EPOCHS = 600, 32, 20
BIG_THRESHOLD = 0.57  # diameter / image size above which is_big is true
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible zip bytes


def _sample(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, dict]:
    s = image_size
    base = rng.integers(10, 50)
    noise = rng.normal(base, 12, size=(s, s, 3))
    img = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    category = CATEGORIES[rng.integers(0, 3)]
    row: dict = {"category": category, "is_big": False, "size": None, "hue": None}
    if category != "none":
        diameter = rng.uniform(0.3, 0.84)
        hue = rng.uniform(0.0, 0.7)
        r = diameter * s / 2
        cx, cy = rng.uniform(r, s - r, size=2)
        colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), 1.0))
        draw = ImageDraw.Draw(img)
        if category == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            h = r * 0.886  # same area as the circle
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=colour)
        row.update(is_big=bool(diameter > BIG_THRESHOLD), size=round(float(diameter), 4), hue=round(float(hue), 4))
    # partial labelling
    if rng.random() < 0.10:
        row["category"] = None
    if rng.random() < 0.20:
        row["is_big"] = None
    if row["size"] is not None and rng.random() < 0.25:
        row["size"] = None
    if row["hue"] is not None and rng.random() > 0.225:
        row["hue"] = None
    return np.asarray(img), row


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def make_example_dataset(out: Path, n: int = DEFAULT_N, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                         fmt: str | None = None) -> Path:
    """Write the shapes dataset to `out` (a file path, or a folder -> folder/example.<fmt>) and return the path.
    fmt: "zip" (PNG + some JPEG images, labels.csv) or "npz"; default from the file suffix, else zip."""
    out = Path(out)
    if out.is_dir():
        out = out / f"example.{fmt or 'zip'}"
    fmt = fmt or ("npz" if out.suffix.lower() == ".npz" else "zip")
    if fmt not in ("zip", "npz"):
        raise ValueError(f"fmt must be 'zip' or 'npz', got {fmt!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = [_sample(rng, image_size) for _ in range(n)]
    columns = ("category", "is_big", "size", "hue")
    if fmt == "npz":
        def floats(col: str) -> np.ndarray:
            return np.array([np.nan if r[col] is None else float(r[col]) for _, r in samples], dtype=np.float64)

        np.savez_compressed(
            out,
            images=np.stack([img for img, _ in samples]),
            category=np.array([r["category"] or "" for _, r in samples], dtype=np.str_),
            is_big=floats("is_big"), size=floats("size"), hue=floats("hue"),
        )
        return out
    labels = io.StringIO()
    writer = csv.writer(labels, lineterminator="\n")
    writer.writerow(("image", *columns))
    with zipfile.ZipFile(out, "w") as zf:
        for i, (pixels, row) in enumerate(samples):
            jpeg = i % 7 == 6
            name = f"images/{i:05d}.{'jpg' if jpeg else 'png'}"
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG" if jpeg else "PNG", **({"quality": 92} if jpeg else {}))
            zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), buf.getvalue())
            writer.writerow((name, *(_cell(row[c]) for c in columns)))
        info = zipfile.ZipInfo("labels.csv", _FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, labels.getvalue())
    return out


def example_spec(image_size: int = DEFAULT_IMAGE_SIZE, weighting: str = "fixed",
                 epochs: int | str = DEFAULT_EPOCHS) -> dict:
    """A valid spec for the shapes dataset: 4 heads, a gated regression, a sparse regression. category (circle vs
    square: the only head that needs the shape, not the area or the colour) weighs 2; depth 4 pools to 8x8."""
    return {
        "spec_version": 1,
        "tasks": [
            {"name": "category", "type": "multiclass", "classes": list(CATEGORIES), "weight": 2.0},
            {"name": "is_big", "type": "binary"},
            {"name": "size", "type": "regression", "loss": {"type": "huber", "delta": 1.0},
             "gate": {"task": "category", "classes": ["circle", "square"]}},
            {"name": "hue", "type": "regression", "loss": "mse", "weight": 0.5},
        ],
        "weighting": {"strategy": weighting},
        "model": {"image_size": image_size, "channels": 3, "width": 16, "depth": 4, "dropout": 0.0,
                  "head_hidden": 32},
        "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "val_fraction": 0.2,
                     "seed": 0, "augmentation": {"hflip": True, "crop": 0}},
    }
