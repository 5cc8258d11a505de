"""The model's one input tensor, `image`, as the shared inference path takes it.

  BYTES [N] (or [N, 1]): each element an encoded PNG/JPEG -- raw bytes in binary data, base64 text in JSON --
      decoded and preprocessed exactly as /v1 predict does (any size, resized as in training);
  UINT8 [N, H, W, C] at the model's size: pixels, used as they are (no resize).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from service.api.v2.codec import ProtocolError, Tensor
from service.errors import PayloadTooLargeError

INPUT = "image"


def _b64(text: bytes, i: int) -> bytes:
    if text.startswith(b"data:") and b"," in text:  # a data URL
        text = text.split(b",", 1)[1]
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"image[{i}]: BYTES in JSON must be base64 of the encoded image") from None


def image_input(tensors: list[Tensor], predictor: Any, max_images: int) -> dict:
    """-> keyword arguments for service.api.predict.run_images (`blobs` + `field`, or `arrays`); 400 / 413."""
    names = [t.name for t in tensors]
    if names != [INPUT]:
        unknown = [n for n in names if n != INPUT]
        what = f"unknown input '{unknown[0]}'" if unknown else f"{len(names)} inputs"
        raise ProtocolError(f"{what}: this model takes exactly one input, '{INPUT}'")
    tensor = tensors[0]
    size, channels = predictor.size, predictor.channels
    count = tensor.shape[0] if tensor.shape else 0
    if count > max_images:
        raise PayloadTooLargeError(f"image: {count} images; at most {max_images} per request")
    if tensor.datatype == "BYTES":
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1) or count == 0:
            raise ProtocolError(f"image: a BYTES image batch has shape [N] or [N, 1] with N >= 1, got {tensor.shape}")
        blobs = tensor.data if tensor.binary else [_b64(x, i) for i, x in enumerate(tensor.data)]
        return {"blobs": blobs, "field": INPUT}
    if tensor.datatype == "UINT8":
        expected = [count, size, size, channels]
        if tensor.shape != expected or count == 0:
            raise ProtocolError(f"image: UINT8 images have shape [N, {size}, {size}, {channels}] (this model's "
                                f"size) with N >= 1, got {tensor.shape}")
        return {"arrays": np.require(tensor.data.reshape(expected), np.uint8, ["C", "W"])}
    raise ProtocolError(f"image: datatype {tensor.datatype} is not accepted; send BYTES (encoded PNG/JPEG) or "
                        f"UINT8 [N, {size}, {size}, {channels}]")
