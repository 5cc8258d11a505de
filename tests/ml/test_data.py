"""service.ml.data: readers, hostile archives, label encoding, preprocessing, image cache, audit."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from service.ml.data import (
    DataError,
    Limits,
    audit,
    build_image_cache,
    encode_labels,
    load_training_data,
    read_table,
    resolve_spec,
    summarize,
    to_pixels,
    verify_images,
)
from service.ml.data import images as images_module
from service.ml.spec import SpecError, parse_spec

from .conftest import labels_text, png_bytes


def spec_of(*tasks: dict, **extra) -> object:
    return parse_spec({"tasks": list(tasks), **extra})


CAT = {"name": "category", "type": "multiclass"}
ADULT = {"name": "is_adult", "type": "binary"}
AGE = {"name": "age", "type": "regression"}


# ---------------------------------------------------------------------------------------------- readers


def test_zip_csv_reader(make_zip_dataset):
    table = read_table(make_zip_dataset())
    assert table.format == "zip" and len(table) == 4
    assert table.keys == ["img/0.png", "img/1.png", "img/2.png", "img/3.png"]
    assert table.columns["category"] == ["cat", "dog", None, "cat"]
    assert table.columns["age"] == ["3.5", None, "7", "1e-1"]
    assert table.columns["note"] == ["x", None, "y", None]  # unknown columns are kept
    assert table.where(2, "age") == "labels.csv row 3, column 'age'"
    assert table.warnings == []


def test_zip_jsonl_reader(make_zip_dataset):
    rows = [{"image": "a.png", "age": 3, "ok": True, "c": "x"}, {"image": "b.png", "age": None},
            {"image": "c.png", "c": ""}]
    table = read_table(make_zip_dataset(rows, labels="jsonl"))
    assert table.columns == {"age": [3.0, None, None], "ok": [True, None, None], "c": ["x", None, None]}
    assert table.where(1) == "labels.jsonl line 2"


def test_csv_bom_crlf_and_folder(make_zip):
    text = "\ufeffimage,age\r\nimgs/a.png,1\r\n\r\nimgs/b.png,\r\n"
    path = make_zip({"ds/labels.csv": text.encode("utf-8"), "ds/imgs/a.png": png_bytes(),
                     "ds/imgs/b.png": png_bytes(), "ds/imgs/extra.png": png_bytes(), "ds/README.txt": "hi",
                     "__MACOSX/ds/._a.png": b"junk"})
    table = read_table(path)
    assert table.keys == ["ds/imgs/a.png", "ds/imgs/b.png"]
    assert table.columns == {"age": ["1", None]}
    assert any("1 image(s) in the archive have no row" in w and "extra.png" in w for w in table.warnings)
    assert any("README.txt" in w for w in table.warnings)
    assert not any("MACOSX" in w for w in table.warnings)


def test_npz_layouts_and_columns(make_npz, tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    cols = {"age": np.array([1.5, np.nan, 3]), "name": np.array(["a", "", "b"]),
            "n": np.array([1, 2, 3]), "flag": np.array([True, False, True])}
    t1 = read_table(make_npz("hwc.npz", images=nhwc, **cols))
    assert t1.format == "npz" and t1.keys == ["0", "1", "2"] and t1.image_shape == (3, 5, 6, 3)
    assert t1.columns == {"age": [1.5, None, 3.0], "name": ["a", None, "b"], "n": [1.0, 2.0, 3.0],
                          "flag": [True, False, True]}
    assert t1.where(1, "age") == "hwc.npz index 1, column 'age'"
    t2 = read_table(make_npz("chw.npz", images=nhwc.transpose(0, 3, 1, 2).copy(), **cols))
    assert (t2.image_layout, t2.image_shape) == ("NCHW", (3, 5, 6, 3))
    t3 = read_table(make_npz("gray.npz", images=nhwc[..., 0].copy(), age=cols["age"]))
    assert (t3.image_layout, t3.image_shape) == ("NHW", (3, 5, 6, 1))
    c1 = build_image_cache(tmp_path / "hwc.npz", t1, 6, 3, tmp_path / "c1.npy")
    c2 = build_image_cache(tmp_path / "chw.npz", t2, 6, 3, tmp_path / "c2.npy")
    c3 = build_image_cache(tmp_path / "gray.npz", t3, 5, 1, tmp_path / "c3.npy")
    assert np.array_equal(c1, c2) and c1.shape == (3, 6, 6, 3) and c3.shape == (3, 5, 5, 1)
    same = build_image_cache(tmp_path / "hwc.npz", t1, 6, 3, tmp_path / "c1b.npy")
    assert same.shape == (3, 6, 6, 3)
    exact = build_image_cache(tmp_path / "sq.npz", read_table(make_npz("sq.npz", images=nhwc[:, :5, :5])),
                              5, 3, tmp_path / "c4.npy")
    assert np.array_equal(exact, nhwc[:, :5, :5])  # no resize needed -> pixels unchanged


@pytest.mark.parametrize("arrays, message", [
    ({"labels": np.zeros(2)}, "no 'images' array"),
    ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "must be uint8"),
    ({"images": np.zeros((2, 5, 5, 7), np.uint8)}, "must be (N, H, W, C)"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "age": np.zeros(3)}, "column 'age': expected shape (2,)"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "c": np.array(["a", None], dtype=object)}, "object arrays"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "c": np.zeros(2, dtype=np.complex64)}, "not supported"),
])
def test_npz_errors(make_npz, arrays, message):
    with pytest.raises(DataError, match="data.npz") as exc:
        read_table(make_npz(**arrays))
    assert message in str(exc.value)


# ------------------------------------------------------------------------------------------ label errors


def table_of(make_zip_dataset, rows, labels="csv"):
    return read_table(make_zip_dataset(rows, labels=labels))


@pytest.mark.parametrize("task, values, message", [
    (ADULT, ["true", "maybe"], "labels.csv row 2, column 'is_adult': 'maybe' is not a boolean; "
                               "expected true/false/1/0/yes/no"),
    ({**AGE, "name": "is_adult"}, ["1", "abc"], "labels.csv row 2, column 'is_adult': 'abc' is not a number"),
    ({**AGE, "name": "is_adult"}, ["nan", "1"], "labels.csv row 1, column 'is_adult': 'nan' is not a finite"),
    ({**AGE, "name": "is_adult"}, ["2", "-inf"], "row 2, column 'is_adult': '-inf' is not a finite number"),
    ({**AGE, "name": "is_adult"}, ["1e39", "1"], "row 1, column 'is_adult': '1e39' is not a finite number"),
    ({**ADULT}, [None, None], "labels.csv, column 'is_adult': no labelled values"),
])
def test_encode_errors_name_row_and_column(make_zip_dataset, task, values, message):
    rows = [{"image": f"{k}.png", "is_adult": v} for k, v in enumerate(values)]
    with pytest.raises(DataError) as exc:
        encode_labels(spec_of(task), table_of(make_zip_dataset, rows))
    assert message in str(exc.value)


def test_encode_values(make_zip_dataset):
    table = table_of(make_zip_dataset, None)
    spec = resolve_spec(spec_of(CAT, ADULT, AGE), table)
    labels = encode_labels(spec, table)
    assert spec.task("category").classes == ["cat", "dog"]
    assert labels["category"].values.tolist() == [0, 1, 0, 0] and labels["category"].values.dtype == np.int64
    assert labels["category"].mask.tolist() == [True, True, False, True]
    assert labels["is_adult"].values.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert labels["is_adult"].values.dtype == np.float32 and labels["is_adult"].mask.tolist()[3] is False
    assert labels["age"].values.tolist() == pytest.approx([3.5, 0.0, 7.0, 0.1])


def test_unknown_class_is_named_with_row(make_zip_dataset):
    table = table_of(make_zip_dataset, None)
    with pytest.raises(SpecError) as exc:
        resolve_spec(spec_of({**CAT, "classes": ["cat", "bird"]}), table)
    assert exc.value.errors == ["tasks[0].classes: class 'dog' in the data (labels.csv row 2, column "
                                "'category') is not among the classes: cat, bird"]
    with pytest.raises(DataError, match="labels.csv row 2, column 'category': 'dog' is not one of the classes"):
        encode_labels(spec_of({**CAT, "classes": ["cat", "bird"]}), table)


def test_resolve_spec_errors(make_zip_dataset):
    table = table_of(make_zip_dataset, None)
    with pytest.raises(SpecError) as exc:
        resolve_spec(spec_of({**AGE, "name": "agee"}, {**ADULT, "name": "adult", "column": "adlt"}), table)
    assert exc.value.errors == [
        "tasks[0].name: column 'agee' is not in the dataset; columns are: category, is_adult, age, note",
        "tasks[1].column: column 'adlt' is not in the dataset; columns are: category, is_adult, age, note"]
    gated = {**AGE, "gate": {"task": "category", "classes": ["bird"]}}
    with pytest.raises(SpecError, match=r"tasks\[1\]\.gate\.classes\[0\]: 'bird' is not a class"):
        resolve_spec(spec_of(CAT, gated), table)
    one = table_of(make_zip_dataset, [{"image": "a.png", "c": "x"}, {"image": "b.png", "c": "x"}])
    with pytest.raises(SpecError, match="single class"):
        resolve_spec(spec_of({**CAT, "name": "c"}), one)
    spec = spec_of(CAT)
    assert resolve_spec(spec, table) is not spec and spec.task("category").classes is None


@pytest.mark.parametrize("members, message", [
    ({"labels.csv": "image,a\nx.png,1\n"}, "labels.csv row 1, column 'image': 'x.png' is not in the archive"),
    ({"labels.csv": "image,a\nx.png,1\nx.png,2\n", "x.png": png_bytes()}, "row 2, column 'image': 'x.png' is "
                                                                          "listed twice (also row 1)"),
    ({"labels.csv": "image,a\n../x.png,1\n"}, "row 1, column 'image': archive entry '../x.png': path traversal"),
    ({"labels.csv": "image,a\nx.gif,1\n", "x.gif": b"GIF89a"}, "row 1, column 'image': x.gif: only PNG and JPEG"),
    ({"labels.csv": "image,a\n,1\n"}, "labels.csv row 1, column 'image': expected an image path"),
    ({"labels.csv": "img;a\nx.png;1\n"}, "labels.csv: no 'image' column; columns are: img;a (the file must be "
                                         "comma-separated)"),
    ({"labels.csv": "image,a,a\n"}, "column 'a' appears twice"),
    ({"labels.csv": "image,a\nx.png,1,2\n", "x.png": png_bytes()}, "labels.csv row 1: 3 cells, but the header has 2"),
    ({"labels.csv": b"image,a\nx.png,\xff\n"}, "labels.csv: not valid UTF-8 text (byte 14)"),
    ({"labels.csv": "image,a\n"}, "labels.csv: no samples"),
    ({"labels.jsonl": '{"image": "x.png"}\n\n{"image": "y.png", }\n'}, "labels.jsonl line 3: invalid JSON"),
    ({"labels.jsonl": '[1, 2]\n'}, "labels.jsonl line 1: expected a JSON object"),
    ({"labels.jsonl": '{"image": "x.png", "a": [1]}\n'}, "labels.jsonl line 1, column 'a': expected a string"),
    ({"x.png": png_bytes()}, "labels file missing"),
    ({"labels.csv": "image\n", "labels.jsonl": ""}, "both labels.csv and labels.jsonl"),
    ({"a/labels.csv": "image\n", "b/labels.csv": "image\n"}, "several labels files (a/labels.csv, b/labels.csv)"),
])
def test_label_file_errors(make_zip, members, message):
    with pytest.raises(DataError) as exc:
        read_table(make_zip(members))
    assert message in str(exc.value)


# ---------------------------------------------------------------------------------------- hostile zips


def ok_members() -> dict:
    return {"labels.csv": "image,a\nx.png,1\n", "x.png": png_bytes()}


def test_unlabelled_header_column_is_ignored_with_warning(make_zip):
    table = read_table(make_zip({"labels.csv": ",image,a\n0,x.png,1\n", "x.png": png_bytes()}))
    assert table.columns == {"a": ["1"]} and "header cell 1 is empty" in table.warnings[0]


@pytest.mark.parametrize("extra, message", [
    ({"../evil.png": b"x"}, "path traversal"),
    ({"a/../../evil.png": b"x"}, "path traversal"),
    ({"/etc/evil.png": b"x"}, "absolute paths are not allowed"),
    ({"C:\\evil.png": b"x"}, "absolute paths are not allowed"),
    ({"inner.zip": b"PK"}, "'inner.zip': nested archives are not allowed"),
    ({"deep/x.tar.gz": b"x"}, "nested archives"),
])
def test_hostile_member_names(make_zip, extra, message):
    with pytest.raises(DataError, match="archive entry") as exc:
        read_table(make_zip({**ok_members(), **extra}))
    assert message in str(exc.value)


def test_symlink_member(make_zip):
    with pytest.raises(DataError, match="'link.png': symbolic links are not allowed"):
        read_table(make_zip(ok_members(), symlinks={"link.png": "/etc/passwd"}))


def test_duplicate_member(make_zip):
    path = make_zip(ok_members())
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("x.png", png_bytes())
    with pytest.raises(DataError, match="'x.png': duplicate path in the archive"):
        read_table(path)


def test_entry_count_size_and_ratio_caps(make_zip):
    many = make_zip({**ok_members(), **{f"f{i}.txt": "" for i in range(10)}})
    with pytest.raises(DataError, match="12 entries, more than the limit of 5"):
        read_table(many, Limits(max_entries=5))
    with pytest.raises(DataError, match="bytes uncompressed, more than the limit of 50"):
        read_table(make_zip(ok_members(), name="b.zip"), Limits(max_total_bytes=50))
    with pytest.raises(DataError, match="'labels.csv': 16 bytes uncompressed, more than the limit of 10"):
        read_table(make_zip(ok_members(), name="c.zip"), Limits(max_member_bytes=10))
    bomb = make_zip({**ok_members(), "zeros.bin": b"\0" * (2 * 1024**2)}, name="d.zip",
                    compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(DataError, match="'zeros.bin': compression ratio .* exceeds 200:1"):
        read_table(bomb)


def test_encrypted_and_unsupported_compression(make_zip, tmp_path):
    path = make_zip(ok_members(), compression=zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match="compression method 12 is not supported"):
        read_table(path)
    path = tmp_path / "enc.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in ok_members().items():
            zf.writestr(name, data)
    raw = bytearray(path.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # set the encryption bit in local and central headers
        at = -1
        while (at := raw.find(sig, at + 1)) >= 0:
            off = at + (6 if sig == b"PK\x03\x04" else 8)
            raw[off] |= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="encrypted entries are not supported"):
        read_table(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.zip"
    path.write_bytes(b"hello, not a zip")
    with pytest.raises(DataError, match="not a valid zip archive"):
        read_table(path)


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (fake_png_header(7000, 7000), "x.png: 7000x7000 = 49000000 pixels, more than the limit of 40000000"),
    (png_bytes(fmt="GIF"), "x.png: not a PNG or JPEG image"),
    (png_bytes(fmt="BMP"), "x.png: not a PNG or JPEG image"),
    (png_bytes((64, 64))[:-40], "x.png: undecodable or truncated image"),
    (b"garbage", "x.png: not a PNG or JPEG image"),
])
def test_bad_images(make_zip, tmp_path, data, message):
    path = make_zip({"labels.csv": "image,a\nx.png,1\n", "x.png": data})
    table = read_table(path)  # labels and archive are fine; images are checked on decode
    with pytest.raises(DataError) as exc:
        verify_images(path, table)
    assert message in str(exc.value)
    with pytest.raises(DataError) as exc:
        build_image_cache(path, table, 8, 3, tmp_path / "cache.npy")
    assert message in str(exc.value)
    assert not (tmp_path / "cache.npy").exists() and not list(tmp_path.glob(".cache*"))


def test_pixel_cap_from_limits_and_to_pixels(make_zip, monkeypatch):
    path = make_zip(ok_members())
    with pytest.raises(DataError, match="8x8 = 64 pixels, more than the limit of 50"):
        verify_images(path, read_table(path), Limits(max_image_pixels=50), decode=False)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(DataError, match="exceeds the limit of 10"):
        to_pixels(Image.new("RGB", (4, 4)), 8, 3)


# ---------------------------------------------------------------------------------------------- pixels


def test_to_pixels_modes():
    def px(img, channels=3, size=2):
        out = to_pixels(img, size, channels)
        assert out.dtype == np.uint8 and out.shape == (size, size, channels)
        return out[0, 0].tolist()

    assert px(Image.new("RGBA", (5, 3), (200, 100, 50, 128))) == [100, 50, 25]  # composited on black
    assert px(Image.new("LA", (4, 4), (200, 255)), channels=1) == [200]
    assert px(Image.new("LA", (4, 4), (200, 0)), channels=1) == [0]
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    assert px(pal) == [10, 20, 30]
    pal.info["transparency"] = 0
    assert px(pal) == [0, 0, 0]
    assert px(Image.new("L", (4, 4), 77)) == [77, 77, 77]
    assert px(Image.new("RGB", (4, 4), (255, 0, 0)), channels=1) == [76]  # ITU-R 601-2 luma
    assert px(Image.new("I;16", (4, 4), 0x1234), channels=1) == [0x12]
    assert px(Image.new("I", (4, 4), 65535), channels=1) == [255]
    assert px(Image.new("I", (4, 4), 70000), channels=1) == [255]
    assert px(Image.new("F", (4, 4), 0.5), channels=1) == [128]
    assert px(Image.new("1", (4, 4), 1), channels=1) == [255]
    assert px(Image.new("CMYK", (4, 4), (0, 0, 0, 0))) == [255, 255, 255]
    sixteen = io.BytesIO()
    Image.new("I;16", (4, 4), 0xABCD).save(sixteen, "PNG")
    assert px(Image.open(io.BytesIO(sixteen.getvalue())), channels=1) == [0xAB]


def test_to_pixels_exif_orientation():
    img = Image.new("RGB", (8, 4), (255, 0, 0))
    img.paste((0, 0, 255), (4, 0, 8, 4))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    out = to_pixels(Image.open(io.BytesIO(buf.getvalue())), 8, 3)
    assert out[0, 4].tolist() == [255, 0, 0] and out[7, 4].tolist() == [0, 0, 255]  # red on top now


def test_cache_reuse_shape_and_read_only(make_zip_dataset, tmp_path, monkeypatch):
    path = make_zip_dataset(size=(12, 10))
    table = read_table(path)
    out = tmp_path / "cache" / "images.npy"
    first = build_image_cache(path, table, 6, 1, out)
    assert first.shape == (4, 6, 6, 1) and first.dtype == np.uint8 and not first.flags.writeable
    assert isinstance(first, np.memmap)
    monkeypatch.setattr(images_module, "iter_images", lambda *a, **k: pytest.fail("cache not reused"))
    again = build_image_cache(path, table, 6, 1, out)
    assert np.array_equal(first, again)
    monkeypatch.undo()
    bigger = build_image_cache(path, table, 7, 3, out)  # shape mismatch -> rebuilt in place
    assert bigger.shape == (4, 7, 7, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["images.npy"]


# ---------------------------------------------------------------------------------------- summary/audit


def test_summarize_kinds(make_zip_dataset):
    rows = [{"image": f"{k}.png", "b": b, "n": n, "c": c, "e": None}
            for k, (b, n, c) in enumerate([("Yes", "1.5", "x"), ("no", "2", "1"), (None, "-3e2", "x")])]
    summary = summarize(table_of(make_zip_dataset, rows))
    assert summary == {"b": {"kind": "binary", "labelled": 2, "values": [False, True]},
                       "n": {"kind": "numeric", "labelled": 3},
                       "c": {"kind": "categorical", "labelled": 3, "values": ["1", "x"]},
                       "e": {"kind": "categorical", "labelled": 0, "values": []}}
    many = [{"image": f"{k}.png", "c": f"v{k:03d}"} for k in range(120)]
    assert len(summarize(table_of(make_zip_dataset, many))["c"]["values"]) == 100


AUDIT_ROWS = [  # category, is_adult, age, size (gated on category in [cat, dog]), whisker (gated on size_known)
    ("cat", "true", "2", "10", "true", "1"),
    ("dog", "false", "4", "20", "true", None),
    ("none", None, "6", "5", "false", "3"),   # size: gate violation; whisker: chain (size_known false)
    (None, "1", None, "7", None, None),         # category unknown: no violation
    ("none", "0", "8", None, None, "4"),        # whisker: gate size_known unknown, but not chained negative
]


def audit_table(make_zip_dataset):
    cols = ("category", "is_adult", "age", "size", "size_known", "whisker")
    rows = [{"image": f"{k}.png", **dict(zip(cols, r, strict=True))} for k, r in enumerate(AUDIT_ROWS)]
    return table_of(make_zip_dataset, rows)


def test_audit_exact(make_zip_dataset):
    table = audit_table(make_zip_dataset)
    spec = spec_of(CAT, ADULT, AGE,
                   {"name": "size", "type": "regression", "gate": {"task": "category", "classes": ["cat", "dog"]}},
                   {"name": "size_known", "type": "binary", "gate": {"task": "category", "classes": ["cat", "dog"]}},
                   {"name": "whisker", "type": "regression", "gate": {"task": "size_known"}})
    result = audit(spec, table)
    assert result["num_samples"] == 5 and result["spec_errors"] == [] and result["label_errors"] == []
    tasks = result["tasks"]
    assert tasks["category"] == {"column": "category", "type": "multiclass", "labelled": 4, "fraction": 0.8,
                                 "class_counts": {"cat": 1, "dog": 1, "none": 2}, "invalid": 0,
                                 "gate_violations": 0}
    assert tasks["is_adult"]["class_counts"] == {"false": 2, "true": 2}
    age = tasks["age"]
    assert (age["labelled"], age["mean"], age["min"], age["max"]) == (4, 5.0, 2.0, 8.0)
    assert age["std"] == pytest.approx(np.std([2, 4, 6, 8]))
    assert tasks["size"]["gate_violations"] == 1 and tasks["size"]["labelled"] == 4
    assert tasks["size_known"]["gate_violations"] == 1
    assert tasks["whisker"]["gate_violations"] == 2  # row 3 (own gate false) and row 5 (category none, chained)
    w = result["warnings"]
    assert ("task 'size' (column 'size'): 1 label(s) where the gate 'category' is known negative; they are "
            "ignored in training") in w


def test_audit_reports_spec_and_label_errors_without_raising(make_zip_dataset):
    table = audit_table(make_zip_dataset)
    spec = spec_of({**CAT, "classes": ["cat", "dog"]}, {**AGE, "name": "missing"}, {**ADULT, "name": "age"},
                   {"name": "x", "type": "regression", "column": "category"})
    result = audit(spec, table)
    assert any("tasks[1].name: column 'missing' is not in the dataset" in e for e in result["spec_errors"])
    assert any("class 'none'" in e for e in result["spec_errors"])
    assert "missing" not in result["tasks"]
    assert result["tasks"]["category"]["invalid"] == 2
    assert result["tasks"]["age"]["invalid"] == 4  # 2/4/6/8 are not booleans
    assert "labels.csv row 1, column 'age': '2' is not a valid boolean" in result["label_errors"]
    sparse = audit(spec_of(AGE), read_table(make_zip_dataset(
        [{"image": f"{k}.png", "age": "1" if k == 0 else None} for k in range(6)], name="s.zip")))
    assert "task 'age' (column 'age'): only 1 of 6 rows (16.7%) are labelled" in sparse["warnings"]


def test_load_training_data(make_zip_dataset, tmp_path):
    path = make_zip_dataset(labels="jsonl")
    spec, data = load_training_data(spec_of(CAT, ADULT, AGE, model={"image_size": 8, "channels": 1}), path,
                                    tmp_path / "cache")
    assert spec.task("category").classes == ["cat", "dog"]
    assert data.images.shape == (4, 8, 8, 1) and set(data.labels) == {"category", "is_adult", "age"}
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_labels_text_helper_round_trip(make_zip):
    rows = [{"image": "x.png", "a": None, "b": "q,\"r\""}]
    path = make_zip({"labels.csv": labels_text(rows), "x.png": png_bytes()})
    assert read_table(path).columns == {"a": [None], "b": ['q,"r"']}
