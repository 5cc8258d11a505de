"""Streaming multipart/form-data parsing with size caps (no spooling to /tmp, no whole-body buffering).

The web layer feeds raw request chunks; file parts go straight into sinks (a file under DATA_DIR/tmp for
dataset uploads, bounded memory for /predict images); text fields are small and capped.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 1000


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


@dataclass
class FileSink:
    """Writes one part to `path`, hashing and counting; PayloadTooLargeError past max_bytes."""

    path: Path
    max_bytes: int
    label: str = "file"
    too_large: str = ""  # the 413 message when max_bytes is a quota rather than the upload limit
    size: int = 0
    sha256: str = ""
    _hash: Any = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLargeError(
                self.too_large or f"{self.label} is larger than the limit of {self.max_bytes} bytes")
        self._hash.update(data)
        self._fh.write(data)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.sha256 = self._hash.hexdigest()


@dataclass
class MemorySink:
    """Keeps a part in memory; the shared `budget` caps the bytes of all parts together."""

    budget: list[int]  # [bytes left], shared between sinks of one request
    label: str
    chunks: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise PayloadTooLargeError(f"request images exceed the limit ({self.label} crossed it)")
        self.chunks.append(data)

    def close(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


# open_file(field name, filename, content type) -> sink; may raise (e.g. 415 for a wrong extension)
OpenFile = Callable[[str, str, str], Sink]


class StreamingForm:
    def __init__(self, content_type: str, open_file: OpenFile, *, max_field_bytes: int = MAX_FIELD_BYTES):
        ctype, params = parse_options_header(content_type or "")
        if ctype != b"multipart/form-data":
            raise UnsupportedMediaError("expected a multipart/form-data body")
        boundary = params.get(b"boundary")
        if not boundary:
            raise ValidationError("multipart body without a boundary")
        self.open_file = open_file
        self.max_field_bytes = max_field_bytes
        self.fields: dict[str, str] = {}
        self.files: list[tuple[str, str, Sink]] = []  # (field, filename, sink) in input order
        self._headers: dict[bytes, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._name = ""
        self._text: bytearray | None = None
        self._sink: Sink | None = None
        self._parts = 0
        self._done = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # ---- parser callbacks ----------------------------------------------------------------------------
    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise PayloadTooLargeError(f"more than {MAX_PARTS} parts in the multipart body")
        self._headers, self._hname, self._hvalue = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._hname.lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise ValidationError("multipart part without a 'Content-Disposition: form-data; name=...' header")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            ctype = self._headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            self._sink = self.open_file(self._name, filename, ctype)
            self.files.append((self._name, filename, self._sink))
            self._text = None
        else:
            self._sink, self._text = None, bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > self.max_field_bytes:
                raise PayloadTooLargeError(f"form field '{self._name}' exceeds {self.max_field_bytes} bytes")

    def _part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        elif self._text is not None:
            self.fields[self._name] = self._text.decode("utf-8", "replace")
            self._text = None

    def _end(self) -> None:
        self._done = True

    # ---- driving -------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise ValidationError(f"malformed multipart body: {exc}") from None

    def finish(self) -> None:
        if not self._done:
            raise ValidationError("malformed multipart body: it ends before the closing boundary")

    def close_all(self) -> None:
        for _field, _name, sink in self.files:
            sink.close()

    async def consume(self, stream: AsyncIterator[bytes], max_bytes: int) -> None:
        """Feed a whole request stream, capping the body at max_bytes (413)."""
        total = 0
        async for chunk in stream:
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLargeError(f"request body is larger than the limit of {max_bytes} bytes")
            if chunk:
                self.feed(chunk)
        self.finish()


def check_content_length(header: str | None, max_bytes: int) -> None:
    """413 before reading anything when the declared body is over the cap."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise ValidationError("invalid Content-Length header") from None
    if length > max_bytes:
        raise PayloadTooLargeError(f"request body of {length} bytes is larger than the limit of {max_bytes} bytes")
