"""Pixels: THE preprocessing shared by training and inference, and the decoded-once uint8 image cache.

`to_pixels` is the only place an image becomes model input (training cache and Predictor both call it):
EXIF orientation applied, every mode reduced to 8-bit L or RGB in a fixed way (alpha composited on black,
16-bit >> 8, palette expanded), converted to the spec's channels, resized BILINEAR to a square.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from service.ml.data.archive import (
    DEFAULT_LIMITS,
    DataError,
    Limits,
    SafeZip,
    iter_npy_rows,
    npz_images_header,
    open_image,
)

if TYPE_CHECKING:
    from service.ml.data.table import Table

MAX_IMAGE_PIXELS = DEFAULT_LIMITS.max_image_pixels
PREPROCESS_VERSION = 1  # bump when to_pixels changes: cache files are named with it
_NPZ_CHUNK = 256  # images per read when streaming an .npz


def _composite_on_black(img: Image.Image) -> Image.Image:
    """RGBA/LA (any alpha mode) -> RGB/L with colour * alpha / 255, rounded."""
    grey = img.mode in ("LA", "La")
    rgba = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.uint16)
    colour, alpha = rgba[..., :-1], rgba[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if grey else out)  # uint8 (H, W) -> L, (H, W, 3) -> RGB


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any PIL mode -> an 8-bit "L" or "RGB" image, the same way for training and inference."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        return _composite_on_black(img.convert("RGBA")) if "transparency" in img.info else img.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _composite_on_black(img.convert("RGBA") if mode == "PA" else img)
    if mode.startswith("I;16"):  # 16-bit unsigned: keep the high byte
        arr = np.asarray(img).astype(np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8))
    if mode == "I":  # 32-bit int: treated as 16-bit (PNG 16-bit grey), clipped
        arr = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray((arr >> 8).astype(np.uint8))
    if mode == "F":  # float: [0, 1] scaled to [0, 255] when max <= 1, else clipped to [0, 255]
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def to_pixels(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """PIL image (any size/mode) -> (image_size, image_size, channels) uint8. Used by training AND inference."""
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise DataError(f"image of {img.width}x{img.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        pass
    img = _to_8bit(img)
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


# ------------------------------------------------------------------------------------------------ cache


def iter_images(path: Path, table: Table, limits: Limits | None = None, *, decode: bool = True
                ) -> Iterator[tuple[int, Image.Image]]:
    """(index, PIL image) for every sample, one at a time (memory bounded). DataError names the file."""
    limits = limits or DEFAULT_LIMITS
    if table.format == "npz":
        with SafeZip(Path(path), limits, label=table.source) as archive:
            header = npz_images_header(archive, table.source)
            i = 0
            for chunk in iter_npy_rows(archive, "images.npy", header, _NPZ_CHUNK):
                if table.image_layout == "NCHW":
                    chunk = chunk.transpose(0, 2, 3, 1)
                for arr in chunk:  # (H, W) | (H, W, C): uint8 -> L, L (C=1), RGB, RGBA
                    yield i, Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if arr.ndim == 3 and
                                                                  arr.shape[2] == 1 else arr))
                    i += 1
        return
    with SafeZip(Path(path), limits) as archive:
        for i, key in enumerate(table.keys):
            yield i, open_image(archive.read(key), key, limits, decode=decode)


def verify_images(path: Path, table: Table, limits: Limits | None = None, *, decode: bool = True) -> None:
    """Check every image of a zip dataset (format allowlist, pixel cap, and with decode=True full decoding, which
    catches truncated files). npz images were checked by read_table. Raises DataError naming the file."""
    if table.format == "npz":
        return
    for _ in iter_images(path, table, limits, decode=decode):
        pass


def cache_path(cache_dir: Path, image_size: int, channels: int) -> Path:
    return Path(cache_dir) / f"images-v{PREPROCESS_VERSION}-{image_size}x{image_size}x{channels}.npy"


def _existing(out_path: Path, shape: tuple) -> np.ndarray | None:
    if not out_path.exists():
        return None
    try:
        cached = np.load(out_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return cached if cached.shape == shape and cached.dtype == np.uint8 else None


def build_image_cache(path: Path, table: Table, image_size: int, channels: int, out_path: Path,
                      limits: Limits | None = None) -> np.ndarray:
    """Decode every image once into a (N, S, S, C) uint8 .npy at out_path (written to a temp file, then renamed)
    and return it as a read-only memmap. An existing cache file with the right shape is reused."""
    out_path = Path(out_path)
    shape = (len(table), image_size, image_size, channels)
    cached = _existing(out_path, shape)
    if cached is not None:
        return cached
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        count = 0
        for i, img in iter_images(path, table, limits):
            try:
                out[i] = to_pixels(img, image_size, channels)
            except DataError as exc:
                raise DataError(f"{table.keys[i]}: {exc}") from None
            count += 1
        if count != len(table):
            raise DataError(f"{table.source}: {count} images for {len(table)} samples")
        out.flush()
        del out
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(out_path, mmap_mode="r", allow_pickle=False)
