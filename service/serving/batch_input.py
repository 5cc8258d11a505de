"""An uploaded zip of images WITHOUT labels as the engine's Table (keys = the image paths, no label columns), so a
batch prediction reads it exactly like a stored dataset (service.ml iter_images: member by member, checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def unlabelled_table(path: Path, label: str = "file") -> Any:
    """-> Table(format "zip", keys = every PNG/JPEG member, sorted). DataError (-> 422) naming the archive or the
    entry: not a zip, zip-bomb limits, a non-image entry (a labels file is not expected here), no image."""
    from service.ml.data.archive import IMAGE_EXTENSIONS, DataError, SafeZip
    from service.ml.data.table import Table

    with SafeZip(Path(path), label=label) as archive:
        names = sorted(archive.members)
    others = [n for n in names if not n.lower().endswith(IMAGE_EXTENSIONS)]
    if others:
        raise DataError(f"{label}: entry {others[0]!r} is not a PNG/JPEG image (send images only, no labels)")
    if not names:
        raise DataError(f"{label}: the zip holds no PNG/JPEG image")
    return Table(format="zip", keys=names, columns={}, source=label)
