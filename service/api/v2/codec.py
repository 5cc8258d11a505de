"""Open Inference Protocol (KServe V2) tensors on HTTP/REST, with Triton's binary tensor data extension.

Pure numpy + pydantic (no web framework): parse an inference request body into named tensors, and encode named
output tensors into a response body.

Binary extension (triton-inference-server/server docs/protocol/extension_binary_data.md), both directions: when the
`Inference-Header-Content-Length` header is present, the body is that many bytes of JSON followed by the binary
data of every input whose `parameters.binary_data_size` is set, in input order. Binary layout: little-endian, row
major; BOOL one byte per element; BYTES elements each a 4-byte little-endian length then the bytes. An output is
returned binary when its request output says `parameters.binary_data: true`, or, without that, when the request's
`parameters.binary_data_output` is true. In JSON, BYTES elements are strings; an image sent as a BYTES element in
JSON is base64 text (raw encoded images are not UTF-8).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

HEADER = "Inference-Header-Content-Length"
NUMPY = {"BOOL": np.dtype("bool"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
         "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
         "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
DATATYPES = (*NUMPY, "BF16", "BYTES")


class ProtocolError(ValueError):
    """The request breaks the protocol or the model's contract: HTTP 400 with this message."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Model):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(_Model):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(_Model):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass
class Tensor:
    """One input as received: `data` is a numpy array (numeric/BOOL) or a list of bytes (BYTES), flat."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    binary: bool = False  # came as binary data (BYTES elements raw) rather than JSON


def _loc(errors: list[dict]) -> str:
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
    return f"request{where}: {first.get('msg', 'invalid')}"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """-> (JSON bytes, binary tail). Without the header the whole body is JSON."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER}: {header_length!r} is not an integer") from None
    if n == 0:
        raise ProtocolError(f"{HEADER}: 0 (a raw binary request without a JSON header) is not supported; "
                            "send the inference request JSON first")
    if not 0 < n <= len(body):
        raise ProtocolError(f"{HEADER}: {n} is outside the body of {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def parse_request(body: bytes, header_length: str | None) -> tuple[InferRequest, list[Tensor]]:
    """Body (+ the header's value) -> the request and its input tensors, checked against their shapes."""
    head, tail = split_body(body, header_length)
    try:
        request = InferRequest.model_validate(json.loads(head))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request: invalid JSON ({exc})") from None
    except PydanticValidationError as exc:
        raise ProtocolError(_loc(exc.errors())) from None
    tensors, offset = [], 0
    for i, item in enumerate(request.inputs):
        where = f"inputs[{i}] '{item.name}'"
        if item.datatype not in DATATYPES:
            raise ProtocolError(f"{where}: datatype {item.datatype!r} is not a protocol datatype")
        if any(d < 0 for d in item.shape):
            raise ProtocolError(f"{where}: shape {item.shape} has a negative dimension")
        size = item.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
                raise ProtocolError(f"{where}: binary_data_size {size!r} does not fit the {len(tail)} bytes of "
                                    f"binary data after the JSON header")
            data = _from_binary(tail[offset:offset + size], item, where)
            offset += size
        elif item.data is None:
            raise ProtocolError(f"{where}: no 'data' and no parameters.binary_data_size")
        else:
            data = _from_json(item, where)
        count = len(data)
        if count != math.prod(item.shape):
            raise ProtocolError(f"{where}: shape {item.shape} holds {math.prod(item.shape)} elements, "
                                f"the data has {count}")
        tensors.append(Tensor(item.name, item.datatype, list(item.shape), data, size is not None))
    if offset != len(tail):
        raise ProtocolError(f"the binary data is {len(tail)} bytes; the inputs' binary_data_size add up to {offset}")
    return request, tensors


def _from_binary(raw: memoryview, item: RequestInput, where: str) -> Any:
    if item.datatype == "BYTES":
        return split_bytes(raw, where)
    if item.datatype == "BF16":
        raise ProtocolError(f"{where}: BF16 is not supported")
    dtype = NUMPY[item.datatype]
    if len(raw) % dtype.itemsize:
        raise ProtocolError(f"{where}: {len(raw)} bytes is not a whole number of {item.datatype} elements")
    return np.frombuffer(raw, dtype=np.uint8 if item.datatype == "BOOL" else dtype).astype(dtype, copy=False)


def split_bytes(raw: memoryview | bytes, where: str) -> list[bytes]:
    """Serialized BYTES tensor (each element: uint32 LE length + bytes) -> its elements."""
    out, pos, end = [], 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError(f"{where}: BYTES data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > end:
            raise ProtocolError(f"{where}: BYTES element {len(out)} claims {n} bytes; only {end - pos - 4} remain")
        out.append(bytes(raw[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    return [y for x in data for y in _flatten(x)]


def _from_json(item: RequestInput, where: str) -> Any:
    flat = _flatten(item.data)
    if item.datatype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise ProtocolError(f"{where}: BYTES data in JSON must be strings")
        return [x.encode() for x in flat]
    if item.datatype in ("BF16", "FP16"):
        raise ProtocolError(f"{where}: {item.datatype} cannot be sent in JSON; use binary data")
    try:
        array = np.asarray(flat)
    except (ValueError, OverflowError):
        raise ProtocolError(f"{where}: {item.datatype} data must be numbers") from None
    if array.size and array.dtype.kind not in "biuf":
        raise ProtocolError(f"{where}: {item.datatype} data must be numbers")
    if item.datatype == "BOOL":
        return array.astype(bool)
    dtype = NUMPY[item.datatype]
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.dtype.kind == "f" or array.min() < info.min or array.max() > info.max:
            raise ProtocolError(f"{where}: {item.datatype} data must be integers in {info.min}..{info.max}")
    return array.astype(dtype)


# ---- responses --------------------------------------------------------------------------------------------

def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _binary(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes([x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)])
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=NUMPY[datatype]).tobytes()


def _json_data(datatype: str, array: np.ndarray) -> list:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return flat.astype(NUMPY[datatype]).tolist()


def wants_binary(request: InferRequest, output: RequestOutput | None) -> bool:
    if output is not None and "binary_data" in output.parameters:
        return bool(output.parameters["binary_data"])
    return bool(request.parameters.get("binary_data_output", False))


def encode_response(head: dict, outputs: list[tuple[str, str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """head (model_name, model_version, id) + [(name, datatype, array, binary)] -> (body, JSON header length or
    None when the body is JSON only)."""
    entries, blobs = [], []
    for name, datatype, array, binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = _binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(datatype, array)
        entries.append(entry)
    text = json.dumps({**head, "outputs": entries}, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
