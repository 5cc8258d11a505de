"""Dataset files -> Table: validated raw labels per sample, no pixels decoded.

Reading is strict and every error names the file, the row (`labels.csv row 7` = 7th data row after the
header; `labels.jsonl line 7` = physical line; `data.npz index 6` = 0-based array index) and the column.
The archive itself is checked by `service.ml.data.archive.SafeZip` first.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from service.ml.data.archive import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    DataError,
    Limits,
    SafeZip,
    check_image_name,
    image_layout,
    npz_images_header,
    safe_member_name,
)

LABEL_FILES = ("labels.csv", "labels.jsonl")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
MAX_SUMMARY_VALUES = 100


@dataclass
class Table:
    format: str  # "zip" | "npz"
    keys: list[str]  # zip: member path inside the archive; npz: str(index)
    columns: dict[str, list]  # raw values per sample: None = missing, else str | float | bool | tuple (tags)
    warnings: list[str] = field(default_factory=list)
    source: str = ""  # the labels file (or the .npz file) named in messages
    rows: list[int] | None = None  # row/line/index number shown in messages per sample (default i + 1)
    row_word: str = "row"  # "row" (csv), "line" (jsonl), "index" (npz)
    image_shape: tuple[int, ...] | None = None  # npz: images as (N, H, W, C) after normalisation
    image_layout: str | None = None  # npz: "NHWC" | "NCHW" | "NHW" as stored

    def __len__(self) -> int:
        return len(self.keys)

    def where(self, i: int, column: str | None = None) -> str:
        """'labels.csv row 7, column 'age'' for sample i."""
        number = self.rows[i] if self.rows is not None else i + 1
        text = f"{self.source} {self.row_word} {number}".strip()
        return f"{text}, column '{column}'" if column is not None else text


# ----------------------------------------------------------------------------------------------- values


def as_bool(v) -> bool | None:
    """true/false/1/0/yes/no (any case), a bool, or the numbers 1/0; None if not boolean-like."""
    if isinstance(v, bool):
        return v
    if isinstance(v, float | int):
        return True if v == 1 else False if v == 0 else None
    if isinstance(v, str):
        word = v.strip().lower()
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    return None


def as_number(v) -> float | None:
    """A float (possibly nan/inf) or None if the value is not a number at all."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, float | int):
        return float(v)
    try:
        return float(str(v).strip())
    except (ValueError, OverflowError):
        return None


def class_name(v) -> str:
    """The class string of a raw value: 'cat', True -> 'true', 3.0 -> '3', 2.5 -> '2.5'."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, tuple):
        return "|".join(v) if v else "[]"
    return str(v)


def _show(v) -> str:
    return f"'{v}'" if isinstance(v, str) else class_name(v)


# ---------------------------------------------------------------------------------------------- reading


def read_table(path: Path, limits: Limits | None = None) -> Table:
    """Read and validate a dataset file (.zip with labels.csv/labels.jsonl, or .npz) without decoding pixels."""
    path, limits = Path(path), limits or DEFAULT_LIMITS
    suffix = path.suffix.lower()
    if suffix not in (".zip", ".npz"):
        with SafeZip(path, limits, label=path.name) as archive:
            suffix = ".npz" if "images.npy" in archive.members else ".zip"
    table = _read_npz(path, limits) if suffix == ".npz" else _read_zip(path, limits)
    if not table.keys:
        raise DataError(f"{table.source}: no samples")
    return table


def _find_labels(members: dict) -> str:
    by_lower = {name.lower(): name for name in members}
    root = [by_lower[n] for n in LABEL_FILES if n in by_lower]
    if len(root) > 1:
        raise DataError("archive: both labels.csv and labels.jsonl at the root; keep only one")
    if root:
        return root[0]
    nested = sorted(n for n in members if n.count("/") == 1 and n.split("/")[1].lower() in LABEL_FILES)
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise DataError(f"archive: several labels files ({', '.join(nested)}); keep one, at the root")
    raise DataError("archive: labels file missing; expected labels.csv or labels.jsonl at the archive root "
                    "(or in a single top-level folder)")


def _read_zip(path: Path, limits: Limits) -> Table:
    with SafeZip(path, limits) as archive:
        labels_name = _find_labels(archive.members)
        source = PurePosixPath(labels_name).name
        data = archive.read(labels_name, limits.max_labels_bytes)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not valid UTF-8 text (byte {exc.start})") from None
        parse = _parse_jsonl if source.lower().endswith(".jsonl") else _parse_csv
        table = parse(text, source, limits)
        prefix = labels_name[: -len(source)]
        seen: dict[str, int] = {}
        for i, image in enumerate(table.keys):
            where = table.where(i, "image")
            if not isinstance(image, str) or not image:
                raise DataError(f"{where}: expected an image path, got {_show(image) if image else 'nothing'}")
            try:
                name = safe_member_name(image)
                check_image_name(name)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            key = prefix + name if prefix + name in archive.members else name
            if key not in archive.members:
                raise DataError(f"{where}: '{image}' is not in the archive")
            if key in seen:
                raise DataError(f"{where}: '{image}' is listed twice (also {table.row_word} "
                                f"{table.rows[seen[key]] if table.rows else seen[key] + 1})")
            seen[key] = i
            table.keys[i] = key
        rest = [n for n in archive.members if n not in seen and n != labels_name]
        unlabelled = [n for n in rest if n.lower().endswith(IMAGE_EXTENSIONS)]
        others = [n for n in rest if not n.lower().endswith(IMAGE_EXTENSIONS)]
        if unlabelled:
            table.warnings.append(f"{len(unlabelled)} image(s) in the archive have no row in {source} and are "
                                  f"ignored (e.g. {', '.join(unlabelled[:3])})")
        if others:
            table.warnings.append(f"{len(others)} other file(s) in the archive are ignored "
                                  f"(e.g. {', '.join(others[:3])})")
    return table


def _parse_csv(text: str, source: str, limits: Limits) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    images: list = []
    columns: dict[str, list] = {}
    rows: list[int] = []
    warnings: list[str] = []
    try:
        header = [h.strip() for h in next(reader, [])]
        if "image" not in header:
            hint = " (the file must be comma-separated)" if len(header) == 1 and ";" in header[0] else ""
            raise DataError(f"{source}: no 'image' column; columns are: {', '.join(header) or '(none)'}{hint}")
        for j, name in enumerate(header):
            if name in columns or (name == "image" and header.index("image") != j):
                raise DataError(f"{source}: column '{name}' appears twice in the header")
            if name == "":
                warnings.append(f"{source}: header cell {j + 1} is empty; that column is ignored")
            elif name != "image":
                columns[name] = []
        wanted = [(j, columns[name]) for j, name in enumerate(header) if name in columns]
        at = header.index("image")
        for record in reader:
            if not record or all(not c.strip() for c in record):
                continue
            rows.append(len(rows) + 1)
            if len(record) != len(header):
                raise DataError(f"{source} row {len(rows)}: {len(record)} cells, but the header has {len(header)}")
            if len(rows) > limits.max_samples:
                raise DataError(f"{source}: more than {limits.max_samples} rows")
            images.append(record[at].strip())
            for j, values in wanted:
                values.append(record[j].strip() or None)
    except csv.Error as exc:
        raise DataError(f"{source} line {reader.line_num}: malformed CSV ({exc})") from None
    return Table("zip", images, columns, warnings, source, rows, "row")


def _json_value(v, where: str):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip() or None
    if isinstance(v, int | float):
        try:
            return float(v)
        except OverflowError:
            raise DataError(f"{where}: number out of range") from None
    if isinstance(v, list):  # a tag set (multilabel heads): a list of strings; [] = labelled, no tag
        if all(isinstance(t, str) for t in v):
            return tuple(t.strip() for t in v)
        raise DataError(f"{where}: expected a string, number, boolean, list of strings (tags) or null; a list "
                        "must hold only strings")
    raise DataError(f"{where}: expected a string, number, boolean, list of strings or null, got a JSON "
                    f"{type(v).__name__}")


def _parse_jsonl(text: str, source: str, limits: Limits) -> Table:
    images: list = []
    columns: dict[str, list] = {}
    rows: list[int] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source} line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{source} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        if len(rows) >= limits.max_samples:
            raise DataError(f"{source}: more than {limits.max_samples} rows")
        image = obj.get("image")
        images.append(image.strip() if isinstance(image, str) else image)
        for key, raw in obj.items():
            if key == "image":
                continue
            if key not in columns:
                columns[key] = [None] * len(rows)
            columns[key].append(_json_value(raw, f"{source} line {lineno}, column '{key}'"))
        rows.append(lineno)
        for values in columns.values():
            if len(values) < len(rows):
                values.append(None)
    return Table("zip", images, columns, [], source, rows, "line")


def _npz_column(arr: np.ndarray, key: str, n: int, source: str) -> list:
    where = f"{source}, column '{key}'"
    if arr.shape != (n,):
        raise DataError(f"{where}: expected shape ({n},) (one value per image), got {arr.shape}")
    kind = arr.dtype.kind
    if kind == "b":
        return [bool(v) for v in arr.tolist()]
    if kind in "iu":
        return [float(v) for v in arr.tolist()]
    if kind == "f":
        return [None if math.isnan(v) else float(v) for v in arr.tolist()]
    if kind == "U":
        return [v.strip() or None for v in arr.tolist()]
    if kind == "S":
        try:
            return [v.decode("utf-8").strip() or None for v in arr.tolist()]
        except UnicodeDecodeError:
            raise DataError(f"{where}: byte strings must be UTF-8") from None
    raise DataError(f"{where}: dtype {arr.dtype} is not supported; use numbers (NaN = missing) or strings "
                    "('' = missing)")


def _read_npz(path: Path, limits: Limits) -> Table:
    source = path.name
    with SafeZip(path, limits, label=source) as archive:
        shape, layout = image_layout(npz_images_header(archive, source), source, limits)
        names = list(archive.members)
    n = shape[0]
    columns: dict[str, list] = {}
    warnings: list[str] = []
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{source}: not a readable .npz ({exc})") from None
    with npz:
        for name in names:
            key = name.removesuffix(".npy")
            if not name.endswith(".npy"):
                warnings.append(f"{source}: '{name}' is not an array and is ignored")
                continue
            if key == "images":
                continue
            try:
                arr = npz[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise DataError(f"{source}, column '{key}': object arrays are not accepted (loading them "
                                    "needs pickle); save strings as a unicode array ('' = missing) and numbers "
                                    "as floats (NaN = missing)") from None
                raise DataError(f"{source}, column '{key}': unreadable array ({exc})") from None
            except (OSError, EOFError, KeyError) as exc:
                raise DataError(f"{source}, column '{key}': unreadable array ({exc})") from None
            columns[key] = _npz_column(arr, key, n, source)
    return Table("npz", [str(i) for i in range(n)], columns, warnings, source, list(range(n)), "index",
                 image_shape=shape, image_layout=layout)
