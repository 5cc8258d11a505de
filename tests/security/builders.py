"""Builders for hostile inputs: zip archives (with byte-level patches of their headers), crafted and converted
images, labels files with BOMs and odd line endings, multipart bodies written by hand."""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

CDIR_SIG, LOCAL_SIG = b"PK\x01\x02", b"PK\x03\x04"


# ----------------------------------------------------------------------------------------------- images


def png(size: int = 16, color=(200, 30, 30), mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, "PNG", **save)
    return buf.getvalue()


def noise_png(size: int = 16, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg(size: int = 16, color=(30, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def gif(size: int = 16) -> bytes:
    return encode(Image.new("P", (size, size), 3), "GIF")


def bmp(size: int = 16) -> bytes:
    return encode(Image.new("RGB", (size, size), (1, 2, 3)), "BMP")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (8-bit grey) with a tiny IDAT: a decompression bomb's header. The
    file is a few dozen bytes; decoding it would need width * height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: max(8, int(len(data) * keep))]


# ----------------------------------------------------------------------------------------------- labels


def csv_labels(rows: Iterable[Iterable[str]], header: Iterable[str] = ("image", "category"), *, bom: bool = False,
               newline: str = "\n") -> bytes:
    lines = [",".join(header), *(",".join(r) for r in rows)]
    text = newline.join(lines) + newline
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def shapes_rows(n: int, prefix: str = "images/img") -> list[tuple[str, str]]:
    """n (image path, category) rows with two classes."""
    return [(f"{prefix}{i}.png", "circle" if i % 2 else "square") for i in range(n)]


# -------------------------------------------------------------------------------------------------- zips


def zip_bytes(members: Iterable[tuple[str | zipfile.ZipInfo, bytes]] | dict,
              compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name or ZipInfo, bytes) members, duplicates allowed, in the given order."""
    items = members.items() if isinstance(members, dict) else members
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in items:
                zf.writestr(name, data)
    return buf.getvalue()


def dataset_zip(images: dict[str, bytes], labels: bytes, labels_name: str = "labels.csv",
                extra: Iterable[tuple[str | zipfile.ZipInfo, bytes]] = ()) -> bytes:
    return zip_bytes([(labels_name, labels), *images.items(), *extra])


def small_dataset(n: int = 6, **extra_images: bytes) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    rows = shapes_rows(n)
    images = {name: noise_png(8, seed=i) for i, (name, _c) in enumerate(rows)}
    images.update(extra_images)
    return images, rows


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # unix
    return info


def fifo_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    info.create_system = 3
    return info


def _entries(data: bytes) -> list[tuple[int, str]]:
    """(offset of the central directory header, member name) for each entry."""
    out, pos = [], 0
    while (pos := data.find(CDIR_SIG, pos)) >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        out.append((pos, data[pos + 46 : pos + 46 + name_len].decode("utf-8", "replace")))
        pos += 46
    return out


CDIR_FIELDS = {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"), "compress_size": (20, "<I"),
               "file_size": (24, "<I"), "header_offset": (42, "<I")}
LOCAL_FIELDS = {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"), "compress_size": (18, "<I"),
                "file_size": (22, "<I")}


def cdir_field(data: bytes, name: str, field: str) -> int:
    for pos, member in _entries(data):
        if member == name:
            off, fmt = CDIR_FIELDS[field]
            return struct.unpack_from(fmt, data, pos + off)[0]
    raise KeyError(name)


def patch_zip(data: bytes, name: str, *, local: bool = True, **fields: int) -> bytes:
    """Rewrite header fields of member `name` in its central directory entry (and its local header)."""
    out = bytearray(data)
    for pos, member in _entries(data):
        if member != name:
            continue
        offset = struct.unpack_from("<I", data, pos + 42)[0]
        for key, value in fields.items():
            off, fmt = CDIR_FIELDS[key]
            struct.pack_into(fmt, out, pos + off, value)
            if local and key in LOCAL_FIELDS:
                loff, lfmt = LOCAL_FIELDS[key]
                struct.pack_into(lfmt, out, offset + loff, value)
        return bytes(out)
    raise KeyError(name)


def overlapping_zip(labels: bytes, image: bytes) -> bytes:
    """Two names, one set of bytes: the second entry's central header points at the first entry's data (the
    "overlapping files" zip bomb construction)."""
    data = zip_bytes([("labels.csv", labels), ("images/a.png", image), ("images/b.png", b"x")],
                     zipfile.ZIP_STORED)
    fields = {k: cdir_field(data, "images/a.png", k) for k in ("header_offset", "crc", "compress_size", "file_size")}
    return patch_zip(data, "images/b.png", local=False, **fields)


def bomb_member(megabytes: int) -> bytes:
    """`megabytes` MiB of zeros: deflates about 1000:1."""
    return b"\0" * (megabytes * 1024 * 1024)


# --------------------------------------------------------------------------------------------- multipart


def multipart(parts: Iterable[tuple[str, str | None, bytes]], boundary: str = "hwboundary", *,
              close: bool = True) -> tuple[bytes, str]:
    """(body, content type) of hand-written multipart/form-data: parts are (field, filename or None, bytes)."""
    chunks = []
    for field, filename, data in parts:
        disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    if close:
        chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
