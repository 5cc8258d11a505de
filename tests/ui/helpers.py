"""Shared helpers for the UI/plots/client tests: decode PNGs and check they are real pictures."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_png(data: bytes, min_size: tuple[int, int] = (200, 150)) -> np.ndarray:
    """Decode `data` as a PNG and check it is a real picture: at least `min_size` pixels, many colours,
    and not one flat colour. Returns the RGB array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    width, height = image.size
    assert width >= min_size[0] and height >= min_size[1], f"PNG too small: {image.size}"
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 5.0, "PNG is (nearly) uniform"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours >= 8, f"PNG has only {colours} colours"
    return pixels


def history(epochs: int = 4, tasks: tuple[str, ...] = ("category", "size"), learned: bool = False) -> list[dict]:
    """A synthetic trainer history in the engine's format."""
    out = []
    for e in range(1, epochs + 1):
        train = {t: {"loss": 1.0 / e + 0.1 * i, "labelled": 80} for i, t in enumerate(tasks)}
        val = {}
        for i, t in enumerate(tasks):
            val[t] = {"loss": 1.2 / e + 0.1 * i, "labelled": 20}
            if t == "category":
                val[t].update(accuracy=0.5 + 0.1 * e, macro_f1=0.4 + 0.1 * e)
            else:
                val[t].update(mae=2.0 / e, rmse=2.5 / e)
        weights = {t: (1.0 + 0.1 * e * (i + 1) if learned else 1.0) for i, t in enumerate(tasks)}
        out.append({"epoch": e, "lr": 1e-3, "seconds": 0.5, "images_per_second": 200.0, "weights": weights,
                    "train": train, "val": val, "val_loss": sum(v["loss"] for v in val.values())})
    return out
