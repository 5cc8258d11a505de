"""Safe reading of untrusted dataset files: zip archives, .npz arrays and image bytes.

Everything here assumes hostile input. A zip is checked from its central directory before any member is read
(entry count, path traversal, absolute paths, symlinks and other special files, nested archives, encryption,
compression method, duplicate names, per-member and total uncompressed size, compression ratio, overlapping
entries), and bytes are counted again while they are read. Images are opened with a PNG/JPEG allowlist and an
explicit pixel cap before decoding. Every failure is a DataError whose message names the entry.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """A dataset (or an image) is unusable; the message names the file, row and column where it can."""


@dataclass(frozen=True)
class Limits:
    """Caps applied to untrusted datasets. The service builds one from its settings; tests shrink them."""

    max_entries: int = 200_000  # zip entries (files + folders), checked before the directory is parsed
    max_directory_bytes: int = 64 * 1024**2  # size of the zip central directory
    max_total_bytes: int = 8 * 1024**3  # uncompressed bytes over all members (declared and read)
    max_member_bytes: int = 256 * 1024**2  # uncompressed bytes of any one member
    max_labels_bytes: int = 64 * 1024**2  # labels.csv / labels.jsonl
    max_ratio: float = 200.0  # uncompressed / compressed, per member of at least ratio_min_bytes
    ratio_min_bytes: int = 1024**2
    max_image_pixels: int = 40_000_000  # width * height, checked before decoding
    max_samples: int = 1_000_000  # rows of labels / images in an .npz


DEFAULT_LIMITS = Limits()
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
ARCHIVE_EXTENSIONS = (".zip", ".npz", ".jar", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
_IGNORED = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$|Thumbs\.db$)")
_FILE_TYPES_OK = (0, stat.S_IFREG, stat.S_IFDIR)


def _directory_info(path: Path) -> tuple[int, int] | None:
    """(entries, central directory bytes) from the end-of-central-directory record, or None if not found."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or len(tail) - pos < 22:
            return None
        _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[pos : pos + 22])
        loc = pos - 20
        if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and loc >= 0 and tail[loc : loc + 4] == b"PK\x06\x07":
            offset = struct.unpack("<4sLQL", tail[loc : loc + 20])[2]
            f.seek(offset)
            record = f.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack("<4sQ2H2L4Q", record)[7:9]
    return entries, cd_size


def safe_member_name(name: str) -> str:
    """Normalised member name ('\\' -> '/', no leading './'); DataError if it could escape the archive."""
    clean = name.replace("\\", "/")
    if "\x00" in clean or clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise DataError(f"archive entry {name!r}: absolute paths are not allowed")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive entry {name!r}: path traversal ('..') is not allowed")
    if len(clean) > 1024:
        raise DataError(f"archive entry {name[:60]!r}...: name longer than 1024 characters")
    return "/".join(parts) + ("/" if clean.endswith("/") and parts else "")


class SafeZip:
    """A zip archive checked entry by entry; `members` maps normalised names of regular files to ZipInfo."""

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS, *, label: str = "archive"):
        self.path, self.limits, self.label = Path(path), limits, label
        self.bytes_read = 0
        info = _directory_info(self.path)
        if info is not None:
            entries, cd_size = info
            if entries > limits.max_entries:
                raise DataError(f"{label}: {entries} entries, more than the limit of {limits.max_entries}")
            if cd_size > limits.max_directory_bytes:
                raise DataError(f"{label}: central directory of {cd_size} bytes is too large")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DataError(f"{label}: not a valid zip archive ({exc})") from None
        try:
            self.members, self.ignored = self._check(self._zip.infolist())
        except DataError:
            self._zip.close()
            raise

    def _check(self, infos: list[zipfile.ZipInfo]) -> tuple[dict[str, zipfile.ZipInfo], list[str]]:
        lim = self.limits
        if len(infos) > lim.max_entries:
            raise DataError(f"{self.label}: {len(infos)} entries, more than the limit of {lim.max_entries}")
        members: dict[str, zipfile.ZipInfo] = {}
        ignored: list[str] = []
        total = compressed = 0
        for info in infos:
            name = safe_member_name(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise DataError(f"archive entry {info.filename!r}: symbolic links are not allowed")
            if kind not in _FILE_TYPES_OK:
                raise DataError(f"archive entry {info.filename!r}: not a regular file")
            if info.flag_bits & 0x1:
                raise DataError(f"archive entry {info.filename!r}: encrypted entries are not supported")
            if info.is_dir() or not name:
                continue
            if _IGNORED.search(name):
                ignored.append(name)
                continue
            if name.lower().endswith(ARCHIVE_EXTENSIONS):
                raise DataError(f"archive entry {name!r}: nested archives are not allowed")
            if name in members:
                raise DataError(f"archive entry {name!r}: duplicate path in the archive")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DataError(f"archive entry {name!r}: compression method {info.compress_type} is not "
                                "supported (use stored or deflate)")
            if info.file_size > lim.max_member_bytes:
                raise DataError(f"archive entry {name!r}: {info.file_size} bytes uncompressed, more than the "
                                f"limit of {lim.max_member_bytes}")
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= lim.ratio_min_bytes and ratio > lim.max_ratio:
                raise DataError(f"archive entry {name!r}: compression ratio {ratio:.0f}:1 exceeds "
                                f"{lim.max_ratio:.0f}:1 (possible zip bomb)")
            total += info.file_size
            compressed += info.compress_size
            members[name] = info
        if total > lim.max_total_bytes:
            raise DataError(f"{self.label}: {total} bytes uncompressed, more than the limit of "
                            f"{lim.max_total_bytes} (possible zip bomb)")
        if compressed > self.path.stat().st_size:
            raise DataError(f"{self.label}: entries overlap (possible zip bomb)")
        return members, ignored

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """The member's bytes; the uncompressed size is capped and counted against max_total_bytes."""
        info = self.members[name]
        cap = min(info.file_size, max_bytes if max_bytes is not None else self.limits.max_member_bytes)
        if info.file_size > cap:
            raise DataError(f"{name}: {info.file_size} bytes, more than the limit of {cap}")
        try:
            with self._zip.open(info) as f:
                data = f.read(cap + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise DataError(f"{name}: corrupt archive entry ({exc})") from None
        self.bytes_read += len(data)
        if len(data) > cap or self.bytes_read > self.limits.max_total_bytes:
            raise DataError(f"{self.label}: more bytes than declared or allowed while reading {name!r}")
        return data

    def open(self, name: str):
        try:
            return self._zip.open(self.members[name])
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise DataError(f"{name}: corrupt archive entry ({exc})") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------- images


def check_image_name(name: str) -> None:
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"{name}: only PNG and JPEG images are accepted ({', '.join(IMAGE_EXTENSIONS)})")


def open_image(data: bytes, name: str = "image", limits: Limits = DEFAULT_LIMITS, *, decode: bool = True
               ) -> Image.Image:
    """Open PNG/JPEG bytes, check the pixel cap on the header, then (decode=True) decode fully.
    Use it for every untrusted image (dataset members, /predict uploads). DataError naming `name`."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if isinstance(exc, Image.DecompressionBombError):
            raise DataError(f"{name}: image too large ({exc})") from None
        raise DataError(f"{name}: not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise DataError(f"{name}: unreadable image ({exc})") from None
    pixels = img.width * img.height
    if pixels > limits.max_image_pixels:
        raise DataError(f"{name}: {img.width}x{img.height} = {pixels} pixels, more than the limit of "
                        f"{limits.max_image_pixels} (decompression bomb?)")
    if img.width < 1 or img.height < 1:
        raise DataError(f"{name}: empty image")
    if not decode:
        return img
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, MemoryError) as exc:
        raise DataError(f"{name}: undecodable or truncated image ({exc})") from None
    return img


# -------------------------------------------------------------------------------------------------- npz


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def read_npy_header(f) -> NpyHeader:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return NpyHeader(tuple(shape), dtype, fortran)


def npz_images_header(archive: SafeZip, source: str) -> NpyHeader:
    if "images.npy" not in archive.members:
        keys = ", ".join(sorted(n.removesuffix(".npy") for n in archive.members)) or "none"
        raise DataError(f"{source}: no 'images' array; arrays are: {keys}")
    try:
        with archive.open("images.npy") as f:
            return read_npy_header(f)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{source}: unreadable 'images' array ({exc})") from None


def image_layout(header: NpyHeader, source: str, limits: Limits = DEFAULT_LIMITS) -> tuple[tuple, str]:
    """((N, H, W, C), stored layout) for an npz 'images' header: uint8 (N,H,W,C) | (N,C,H,W) | (N,H,W)."""
    if header.dtype != np.uint8:
        raise DataError(f"{source}: 'images' must be uint8, got {header.dtype}")
    if header.fortran_order:
        raise DataError(f"{source}: 'images' is stored in Fortran order; save np.ascontiguousarray(images)")
    s = header.shape
    if len(s) == 3:
        shape, layout = (s[0], s[1], s[2], 1), "NHW"
    elif len(s) == 4 and s[3] in (1, 3, 4):
        shape, layout = s, "NHWC"
    elif len(s) == 4 and s[1] in (1, 3, 4):
        shape, layout = (s[0], s[2], s[3], s[1]), "NCHW"
    else:
        raise DataError(f"{source}: 'images' must be (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4, or "
                        f"(N, H, W); got {s}")
    n, h, w, _ = shape
    if n < 1 or h < 1 or w < 1:
        raise DataError(f"{source}: 'images' is empty; shape {s}")
    if n > limits.max_samples:
        raise DataError(f"{source}: {n} images, more than the limit of {limits.max_samples}")
    if h * w > limits.max_image_pixels:
        raise DataError(f"{source}: images of {w}x{h} pixels exceed the limit of {limits.max_image_pixels}")
    return tuple(int(x) for x in shape), layout


def iter_npy_rows(archive: SafeZip, member: str, header: NpyHeader, chunk: int) -> Iterator[np.ndarray]:
    """Stream a C-ordered array member in chunks of `chunk` rows (memory bounded)."""
    row_shape = header.shape[1:]
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * header.dtype.itemsize
    with archive.open(member) as f:
        read_npy_header(f)
        for start in range(0, header.shape[0], chunk):
            n = min(chunk, header.shape[0] - start)
            try:
                data = f.read(n * row_bytes)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataError(f"{member}: corrupt array data ({exc})") from None
            if len(data) != n * row_bytes:
                raise DataError(f"{member}: array data is truncated")
            archive.bytes_read += len(data)
            yield np.frombuffer(data, dtype=header.dtype).reshape((n, *row_shape))


def member_stem(name: str) -> str:
    return PurePosixPath(name).name.removesuffix(".npy")
