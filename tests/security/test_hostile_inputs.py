"""Table-driven hostile and broken input suite (issue 4).

Every case sends one request to the real app and asserts: the status, the error kind, a part of the detail that
names the problem, and that NOTHING changed: every row of every database table and the whole data directory tree
(paths and file contents) are exactly as before. Positive cases at the end (converted image modes, BOM + CRLF,
unknown columns, unlabelled images: documented decision = accept with a warning) assert what was stored instead.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.security import builders as b
from tests.security.conftest import MAX_PREDICT_BYTES, MAX_UPLOAD, World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Case:
    id: str
    call: Callable[[World], httpx.Response]
    status: int
    kind: str
    detail: str | tuple[str, ...] = ()  # substring(s) the detail must contain
    limits: dict[str, Any] = field(default_factory=dict)  # engine Limits for this case

    def __str__(self) -> str:
        return self.id


# ------------------------------------------------------------------------------------- dataset builders

IMAGES, ROWS = b.small_dataset(6)
LABELS = b.csv_labels(ROWS)


def ds(*, images: dict[str, bytes] | None = None, labels: bytes | None = LABELS, labels_name: str = "labels.csv",
       extra=()) -> bytes:
    """The small valid dataset, with parts replaced or added."""
    members = IMAGES if images is None else images
    if labels is None:
        return b.zip_bytes([*members.items(), *extra])
    return b.dataset_zip(members, labels, labels_name, extra)


def with_image(name: str, data: bytes, category: str = "circle") -> bytes:
    return ds(images={**IMAGES, name: data}, labels=b.csv_labels([*ROWS, (name, category)]))


def up(data: bytes, filename: str = "dataset.zip") -> Callable[[World], httpx.Response]:
    return lambda w: w.upload(data, filename)


def raw_upload(body: bytes, content_type: str, **headers: str) -> Callable[[World], httpx.Response]:
    return lambda w: w.raw("POST", "/v1/datasets", content=body, headers={"Content-Type": content_type, **headers})


def chunked(body: bytes, size: int = 16 * 1024):
    def gen():
        for i in range(0, len(body), size):
            yield body[i : i + size]

    return gen


def chunked_upload(body: bytes, content_type: str) -> Callable[[World], httpx.Response]:
    return lambda w: w.raw("POST", "/v1/datasets", content=chunked(body)(), headers={"Content-Type": content_type})


JSONL_OK = b'{"image": "images/img0.png", "category": "circle"}\n'
ZIP_BOMB_DEFLATED = ds(extra=[("images/padding.png", b.bomb_member(4))])  # 4 MiB of zeros, ~1000:1
DECLARED_SMALLER = b.patch_zip(ds(), "images/img0.png",
                               file_size=b.cdir_field(ds(), "images/img0.png", "file_size") // 2)
MANY = b.zip_bytes([("labels.csv", LABELS), *IMAGES.items(), *((f"junk/{i}.txt", b"x") for i in range(40))])
BIG_MEMBER = ds(extra=[("notes/readme.txt", b"y" * 40_000)])
BIG_TOTAL = ds(extra=[(f"notes/{i}.txt", bytes([i]) * 9_000) for i in range(8)])

# -------------------------------------------------------------------------------------- spec builders

LABEL_TASK = {"name": "category", "type": "multiclass"}


def spec(*tasks: dict, **sections: Any) -> dict:
    body: dict[str, Any] = {"tasks": list(tasks) or [dict(LABEL_TASK)]}
    body.update(sections)
    return body


def job(spec_body: Any, dataset: str = "labels", who: str = "alpha", **body) -> Callable[[World], httpx.Response]:
    return lambda w: w.job(spec_body, dataset, who, **body)


# -------------------------------------------------------------------------------------------- predict

PNG = b.noise_png(16)


def pjson(images: list, model: str = "shapes", who: str = "alpha") -> Callable[[World], httpx.Response]:
    return lambda w: w.predict_json(images, model, who)


def pfiles(images: list[tuple[str, bytes]], model: str = "shapes") -> Callable[[World], httpx.Response]:
    return lambda w: w.predict_files(images, model)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CASES: list[Case] = [
    # ---- request size: capped before multipart parsing, then per file while streaming
    Case("413-declared-length-before-parsing",
         raw_upload(b"this is not multipart at all", "text/plain", **{"Content-Length": str(10 * MAX_UPLOAD)}),
         413, "PayloadTooLarge", "larger than the limit"),
    Case("413-body-over-cap", raw_upload(*b.multipart([("file", "big.zip", b"\0" * (MAX_UPLOAD + 1024 * 1024 + 10))])),
         413, "PayloadTooLarge", "larger than the limit"),
    Case("413-streamed-body-without-length", chunked_upload(*b.multipart([("file", "big.zip", b"\0" * (2 * MAX_UPLOAD))])),
         413, "PayloadTooLarge", "big.zip"),
    Case("413-per-file-cap-while-streaming", raw_upload(*b.multipart([("file", "big.zip", b"\0" * (MAX_UPLOAD + 1))])),
         413, "PayloadTooLarge", "file 'big.zip' is larger than the limit"),
    Case("413-oversized-text-field", raw_upload(*b.multipart([("name", None, b"n" * 70_000), ("file", "d.zip", ds())])),
         413, "PayloadTooLarge", "form field 'name'"),
    Case("415-not-multipart", lambda w: w.raw("POST", "/v1/datasets", json={"file": "x"}),
         415, "UnsupportedMediaType", "multipart/form-data"),
    Case("415-extension-not-allowed", up(ds(), "dataset.tar"), 415, "UnsupportedMediaType", "dataset.tar"),
    Case("422-multipart-without-closing-boundary", raw_upload(*b.multipart([("file", "d.zip", ds())], close=False)),
         422, "ValidationError", "malformed multipart"),
    Case("422-no-file-field", raw_upload(*b.multipart([("name", None, b"x")])), 422, "ValidationError", "file: field required"),
    Case("422-two-archives", raw_upload(*b.multipart([("file", "a.zip", ds()), ("file", "b.zip", ds())])),
         422, "ValidationError", "exactly one archive"),
    Case("422-name-too-long", raw_upload(*b.multipart([("name", None, b"n" * 300), ("file", "d.zip", ds())])),
         422, "ValidationError", "name: at most 200"),
    # ---- zip structure
    Case("zip-not-a-zip", up(b"PK\x03\x04 definitely not a zip" * 10), 422, "DataError", "not a valid zip"),
    Case("zip-traversal-dotdot", up(ds(extra=[("../evil.png", PNG)])), 422, "DataError", "path traversal"),
    Case("zip-traversal-nested-dotdot", up(ds(extra=[("images/../../evil.png", PNG)])), 422, "DataError",
         "path traversal"),
    Case("zip-traversal-backslash", up(ds(extra=[("..\\evil.png", PNG)])), 422, "DataError", "path traversal"),
    Case("zip-absolute-path", up(ds(extra=[("/etc/evil.png", PNG)])), 422, "DataError", "absolute paths"),
    Case("zip-windows-drive-path", up(ds(extra=[("C:/evil.png", PNG)])), 422, "DataError", "absolute paths"),
    Case("zip-symlink-member", up(ds(extra=[(b.symlink_info("images/link.png"), b"/etc/passwd")])), 422, "DataError",
         "symbolic links"),
    Case("zip-special-file-member", up(ds(extra=[(b.fifo_info("images/fifo.png"), b"")])), 422, "DataError",
         "not a regular file"),
    Case("zip-nested-archive", up(ds(extra=[("more/inner.zip", b.zip_bytes({"a.png": PNG}))])), 422, "DataError",
         "nested archives"),
    Case("zip-too-many-entries", up(MANY), 422, "DataError", "more than the limit of 30", limits={"max_entries": 30}),
    Case("zip-bomb-compression-ratio", up(ZIP_BOMB_DEFLATED), 422, "DataError", "compression ratio"),
    Case("zip-member-over-size-cap", up(BIG_MEMBER), 422, "DataError", "more than the limit of 30000",
         limits={"max_member_bytes": 30_000}),
    Case("zip-total-uncompressed-over-cap", up(BIG_TOTAL), 422, "DataError", "possible zip bomb",
         limits={"max_total_bytes": 50_000}),
    Case("zip-overlapping-entries", up(b.overlapping_zip(b.csv_labels([("images/a.png", "x"), ("images/b.png", "y")]),
                                                          b.noise_png(64))),
         422, "DataError", "overlap"),
    Case("zip-declared-size-smaller-than-data", up(DECLARED_SMALLER), 422, "DataError", "images/img0.png"),
    Case("zip-encrypted-entry", up(b.patch_zip(ds(), "images/img1.png", flags=1)), 422, "DataError", "encrypted"),
    Case("zip-unsupported-compression", up(b.zip_bytes([("labels.csv", LABELS), *IMAGES.items()], zipfile.ZIP_BZIP2)),
         422, "DataError", "compression method"),
    Case("zip-duplicate-member-path", up(ds(extra=[("images/img0.png", b.noise_png(8, seed=9))])), 422, "DataError",
         "duplicate path"),
    Case("zip-empty-archive", up(b.zip_bytes({})), 422, "DataError", "labels file missing"),
    # ---- labels file
    Case("labels-missing", up(ds(labels=None)), 422, "DataError", "labels file missing"),
    Case("labels-name-absent-image", up(ds(labels=b.csv_labels([*ROWS, ("images/ghost.png", "circle")]))),
         422, "DataError", ("labels.csv row 7", "'images/ghost.png' is not in the archive")),
    Case("labels-same-image-twice", up(ds(labels=b.csv_labels([*ROWS, ROWS[0]]))), 422, "DataError", "listed twice"),
    Case("labels-no-image-column", up(ds(labels=b"file,category\nimages/img0.png,x\n")), 422, "DataError",
         "no 'image' column"),
    Case("labels-empty-image-cell", up(ds(labels=b.csv_labels([*ROWS, ("", "circle")]))), 422, "DataError",
         "expected an image path"),
    Case("labels-ragged-csv-row", up(ds(labels=LABELS + b"images/img1.png,circle,extra\n")), 422, "DataError",
         "cells, but the header has 2"),
    Case("labels-header-only", up(ds(labels=b"image,category\n")), 422, "DataError", "no samples"),
    Case("labels-not-utf8", up(ds(labels=b"image,category\nimages/img0.png,caf\xe9\n")), 422, "DataError",
         "not valid UTF-8"),
    Case("labels-both-csv-and-jsonl", up(ds(extra=[("labels.jsonl", JSONL_OK)])), 422, "DataError",
         "both labels.csv and labels.jsonl"),
    Case("labels-jsonl-malformed-line", up(ds(labels=JSONL_OK + b'{"image": "images/img1.png", oops}\n',
                                              labels_name="labels.jsonl")),
         422, "DataError", ("labels.jsonl line 2", "invalid JSON")),
    Case("labels-jsonl-not-an-object", up(ds(labels=JSONL_OK + b'["images/img1.png", "circle"]\n',
                                             labels_name="labels.jsonl")),
         422, "DataError", "expected a JSON object"),
    Case("labels-jsonl-nested-value", up(ds(labels=b'{"image": "images/img0.png", "category": {"a": 1}}\n',
                                            labels_name="labels.jsonl")),
         422, "DataError", "column 'category'"),
    Case("labels-file-over-cap", up(ds()), 422, "DataError", "labels.csv", limits={"max_labels_bytes": 64}),
    Case("labels-too-many-rows", up(ds()), 422, "DataError", "more than 3 rows", limits={"max_samples": 3}),
    Case("labels-path-traversal-in-row", up(ds(labels=b.csv_labels([*ROWS, ("../../etc/passwd.png", "x")]))),
         422, "DataError", "path traversal"),
    # ---- images
    Case("image-undecodable", up(with_image("images/junk.png", b"\x89PNG but really not" * 20)), 422, "DataError",
         ("images/junk.png", "not a PNG or JPEG")),
    Case("image-truncated-png", up(with_image("images/cut.png", b.truncated(b.noise_png(64)))), 422, "DataError",
         ("images/cut.png", "truncated")),
    Case("image-truncated-jpeg", up(with_image("images/cut.jpg", b.truncated(b.jpeg(64), 0.5))), 422, "DataError",
         "images/cut.jpg"),
    Case("image-pixel-cap-decompression-bomb", up(with_image("images/bomb.png", b.png_header_only(8000, 8000))),
         422, "DataError", ("images/bomb.png", "more than the limit of 40000000")),
    Case("image-pil-bomb-header", up(with_image("images/huge.png", b.png_header_only(30000, 30000))),
         422, "DataError", "images/huge.png"),
    Case("image-format-allowlist-gif-as-png", up(with_image("images/anim.png", b.gif())), 422, "DataError",
         ("images/anim.png", "not a PNG or JPEG")),
    Case("image-format-allowlist-bmp-name", up(with_image("images/pic.bmp", b.bmp())), 422, "DataError",
         "only PNG and JPEG"),
    Case("image-empty-file", up(with_image("images/empty.png", b"")), 422, "DataError", "images/empty.png"),
    # ---- npz
    Case("npz-garbage", up(b"PK\x03\x04garbage", "data.npz"), 422, "DataError", "data.npz"),
    Case("npz-without-images", up(b.zip_bytes({"labels.npy": b"\x93NUMPY"}), "data.npz"), 422, "DataError",
         "no 'images' array"),
    # ---- labels against a spec, at job creation (nothing is queued)
    Case("labels-wrong-kind-binary", job(spec({"name": "flag", "type": "binary"})), 422, "DataError",
         ("labels.csv row 3, column 'flag'", "'maybe' is not a boolean")),
    Case("labels-wrong-kind-regression", job(spec({"name": "amount", "type": "regression"})), 422, "DataError",
         ("column 'amount'", "'abc' is not a number")),
    Case("labels-nan-in-regression", job(spec({"name": "nanval", "type": "regression"})), 422, "DataError",
         ("row 2, column 'nanval'", "not a finite number")),
    Case("labels-inf-in-regression", job(spec({"name": "infval", "type": "regression"})), 422, "DataError",
         ("row 3, column 'infval'", "not a finite number")),
    Case("labels-unknown-class", job(spec({"name": "shade", "type": "multiclass", "classes": ["red", "blue"]})),
         422, "SpecError", ("tasks[0].classes", "class 'green'")),
    Case("labels-task-with-zero-labels", job(spec(dict(LABEL_TASK), {"name": "empty", "type": "regression"})),
         422, "SpecError", ("tasks[1].name", "no labelled values")),
    # ---- specs: every rule answered with 422 and the field path
    Case("spec-unknown-column", job(spec({"name": "colour", "type": "multiclass"})), 422, "SpecError",
         ("tasks[0].name", "column 'colour' is not in the dataset")),
    Case("spec-unknown-key", job(spec({**LABEL_TASK, "colour": 1})), 422, "SpecError", "tasks[0].colour"),
    Case("spec-bad-type-enum", job(spec({"name": "category", "type": "ordinal"})), 422, "SpecError", "tasks[0]"),
    Case("spec-duplicate-task", job(spec(LABEL_TASK, LABEL_TASK)), 422, "SpecError", "duplicate"),
    Case("spec-gate-unknown-task", job(spec(LABEL_TASK, {"name": "amount", "type": "regression",
                                                          "gate": {"task": "categry", "classes": ["circle"]}})),
         422, "SpecError", "tasks[1].gate.task"),
    Case("spec-gate-on-regression", job(spec({"name": "amount", "type": "regression"},
                                             {"name": "infval", "type": "regression", "gate": {"task": "amount"}})),
         422, "SpecError", "tasks[1].gate"),
    Case("spec-gate-cycle", job(spec({"name": "flag", "type": "binary", "gate": {"task": "flag"}})), 422, "SpecError",
         "tasks[0].gate"),
    Case("spec-loss-does-not-fit-head", job(spec({**LABEL_TASK, "loss": "mse"})), 422, "SpecError", "tasks[0].loss"),
    Case("spec-negative-weight", job(spec({**LABEL_TASK, "weight": -1})), 422, "SpecError", "tasks[0].weight"),
    Case("spec-all-weights-zero", job(spec({**LABEL_TASK, "weight": 0})), 422, "SpecError", "weight"),
    Case("spec-image-size-out-of-range", job(spec(model={"image_size": 4})), 422, "SpecError", "model.image_size"),
    Case("spec-epochs-invalid", job(spec(training={"epochs": 0})), 422, "SpecError", "training.epochs"),
    Case("spec-no-tasks", job({"tasks": []}), 422, "SpecError", "tasks"),
    Case("spec-not-an-object", job("tasks: everything"), 422, "ValidationError", "body.spec"),
    Case("job-missing-dataset-id", lambda w: w.raw("POST", "/v1/jobs", json={"model_name": "m", "spec": spec()}),
         422, "ValidationError", "body.dataset_id"),
    Case("job-bad-model-name", job(spec(), model_name="../../etc"), 422, "ValidationError", "body.model_name"),
    Case("job-invalid-json-body", lambda w: w.raw("POST", "/v1/jobs", content=b"{not json",
                                                  headers={"Content-Type": "application/json"}),
         422, "ValidationError", "body"),
    Case("list-offset-overflow", lambda w: w.raw("GET", f"/v1/jobs?offset={2**70}"), 422, "ValidationError",
         "query.offset"),
    Case("model-version-overflow", lambda w: w.raw("GET", f"/v1/models/shapes/versions/{2**70}"), 422,
         "ValidationError", "path.version"),
    # ---- /predict payloads
    Case("predict-base64-garbage", pjson(["!!not base64!!"]), 422, "ValidationError", "images[0]: not valid base64"),
    Case("predict-base64-not-an-image", pjson([PNG, b"plain text, no image"]), 422, "ValidationError",
         ("images[1]", "not a PNG or JPEG")),
    Case("predict-truncated-image", pjson([b.truncated(b.noise_png(64))]), 422, "ValidationError", "images[0]"),
    Case("predict-pixel-bomb", pjson([b.png_header_only(9000, 9000)]), 422, "ValidationError",
         ("images[0]", "more than the limit")),
    Case("predict-gif-not-allowed", pjson([b.gif()]), 422, "ValidationError", "images[0]"),
    Case("predict-zero-images-json", pjson([]), 422, "ValidationError", "at least one image"),
    Case("predict-zero-images-multipart", lambda w: w.raw("POST", "/v1/models/shapes/predict",
                                                          files={"note": (None, "no images")}),
         422, "ValidationError", "at least one image"),
    Case("predict-too-many-images-json", pjson([PNG] * 5), 413, "PayloadTooLarge", "at most 4"),
    Case("predict-too-many-images-multipart", pfiles([(f"{i}.png", PNG) for i in range(5)]), 413, "PayloadTooLarge",
         "at most 4"),
    Case("predict-images-over-byte-cap", pfiles([("big.png", b"\0" * (MAX_PREDICT_BYTES + 1))]), 413,
         "PayloadTooLarge", "limit"),
    Case("predict-images-not-a-list", lambda w: w.raw("POST", "/v1/models/shapes/predict", json={"images": "abc"}),
         422, "ValidationError", "body.images"),
    Case("predict-invalid-json", lambda w: w.raw("POST", "/v1/models/shapes/predict", content=b"{oops",
                                                 headers={"Content-Type": "application/json"}),
         422, "ValidationError", "invalid JSON"),
    Case("predict-unsupported-media", lambda w: w.raw("POST", "/v1/models/shapes/predict", content=PNG,
                                                      headers={"Content-Type": "image/png"}),
         415, "UnsupportedMediaType", "multipart/form-data"),
    Case("predict-unknown-version", lambda w: w.raw("POST", "/v1/models/shapes/predict?version=7",
                                                    json={"images": [b64(PNG)]}),
         404, "NotFound", "no version 7"),
    # ---- authentication: 401
    Case("auth-no-key", lambda w: w.raw("GET", "/v1/datasets", who=None), 401, "Unauthorized", "missing API key"),
    Case("auth-malformed-key", lambda w: w.raw("GET", "/v1/datasets", who="malformed"), 401, "Unauthorized",
         "invalid API key"),
    Case("auth-forged-secret-real-prefix", lambda w: w.raw("GET", "/v1/datasets", who="forged"), 401, "Unauthorized",
         "invalid API key"),
    Case("auth-revoked-key", lambda w: w.raw("GET", "/v1/datasets", who="revoked"), 401, "Unauthorized", "revoked"),
    Case("auth-basic-scheme", lambda w: w.raw("GET", "/v1/jobs", who=None,
                                              headers={"Authorization": "Basic " + b64(b"admin:admin")}),
         401, "Unauthorized", "missing API key"),
    Case("auth-revoked-key-cannot-upload", lambda w: w.upload(ds(), who="revoked"), 401, "Unauthorized", "revoked"),
    Case("auth-no-key-on-predict", lambda w: w.predict_json([PNG], who="malformed"), 401, "Unauthorized", "invalid"),
    # ---- scopes: 403
    Case("scope-upload-needs-datasets-write", lambda w: w.upload(ds(), who="alpha_predict"), 403, "Forbidden",
         "'datasets:write'"),
    Case("scope-job-needs-jobs-write", job(spec(), who="alpha_reader"), 403, "Forbidden", "'jobs:write'"),
    Case("scope-predict-needs-predict", pjson([PNG], who="alpha_reader"), 403, "Forbidden", "'predict'"),
    Case("scope-models-need-models-read", lambda w: w.raw("GET", "/v1/models", who="alpha_predict"), 403, "Forbidden",
         "'models:read'"),
    Case("scope-delete-needs-datasets-write", lambda w: w.raw("DELETE", f"/v1/datasets/{w.ids['alpha']}",
                                                              who="alpha_reader"),
         403, "Forbidden", "'datasets:write'"),
    Case("scope-keys-need-admin", lambda w: w.raw("GET", "/v1/keys", who="alpha"), 403, "Forbidden", "'admin'"),
    Case("scope-create-key-needs-admin", lambda w: w.raw("POST", "/v1/keys", who="alpha",
                                                         json={"name": "x", "scopes": ["admin"]}),
         403, "Forbidden", "'admin'"),
    Case("team-admin-cannot-mint-for-other-team", lambda w: w.raw("POST", "/v1/keys", who="alpha_admin",
                                                                  json={"name": "x", "scopes": ["admin"],
                                                                        "team": "beta"}),
         403, "Forbidden", "team"),
    # ---- teams: another team's resource is a 404, never a 403
    Case("team-get-dataset", lambda w: w.raw("GET", f"/v1/datasets/{w.ids['beta']}"), 404, "NotFound", "not found"),
    Case("team-delete-dataset", lambda w: w.raw("DELETE", f"/v1/datasets/{w.ids['beta']}"), 404, "NotFound",
         "not found"),
    Case("team-audit-dataset", lambda w: w.raw("POST", f"/v1/datasets/{w.ids['beta']}/audit", json={"spec": spec()}),
         404, "NotFound", "not found"),
    Case("team-get-job", lambda w: w.raw("GET", f"/v1/jobs/{w.ids['beta_job']}"), 404, "NotFound", "not found"),
    Case("team-cancel-job", lambda w: w.raw("POST", f"/v1/jobs/{w.ids['beta_queued']}/cancel"), 404, "NotFound",
         "not found"),
    Case("team-job-on-their-dataset", job(spec(), dataset="beta"), 404, "NotFound", "dataset_id"),
    Case("team-get-model", lambda w: w.raw("GET", "/v1/models/beta-shapes"), 404, "NotFound", "not found"),
    Case("team-get-model-version", lambda w: w.raw("GET", "/v1/models/beta-shapes/versions/1"), 404, "NotFound",
         "not found"),
    Case("team-download-artifact", lambda w: w.raw("GET", "/v1/models/beta-shapes/versions/1/artifact"), 404,
         "NotFound", "not found"),
    Case("team-predict-their-model", pjson([PNG], model="beta-shapes"), 404, "NotFound", "not found"),
    Case("team-admin-revoke-their-key", lambda w: w.raw("DELETE", f"/v1/keys/{w.key_ids['beta']}", who="alpha_admin"),
         404, "NotFound", "not found"),
    Case("team-admin-revoke-unknown-key", lambda w: w.raw("DELETE", "/v1/keys/" + "0" * 32, who="alpha_admin"),
         404, "NotFound", "not found"),
]


def test_enough_cases() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_input(world: World, limits, case: Case) -> None:
    if case.limits:
        limits(**case.limits)
    db_before, tree_before = world.snapshot()
    r = case.call(world)
    assert r.status_code == case.status, f"{case.id}: {r.status_code} {r.text[:500]}"
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    if case.kind:
        assert body["error"] == case.kind, body
    needles = (case.detail,) if isinstance(case.detail, str) else case.detail
    for needle in needles:
        assert needle in body["detail"], f"{case.id}: {needle!r} not in {body['detail']!r}"
    if case.status == 401:
        assert r.headers.get("www-authenticate") == "Bearer"
    db_after, tree_after = world.snapshot()
    assert db_after == db_before, f"{case.id}: database rows changed"
    assert tree_after == tree_before, f"{case.id}: data directory changed"
    assert world.enqueued == [], f"{case.id}: a job was enqueued"


# ------------------------------------------------------------------------------------------ positive cases


def new_rows(before: dict, after: dict) -> dict[str, int]:
    return {t: len(after[t]) - len(before.get(t, [])) for t in after if len(after[t]) != len(before.get(t, []))}


def assert_one_new_dataset(world: World, before_tree: list, dataset_id: str) -> None:
    added = {p for p, _ in world.snapshot()[1]} - {p for p, _ in before_tree}
    assert added and all(p.startswith(f"datasets/{dataset_id}") for p in added), added
    assert not any(world.settings.DATA_DIR.joinpath("tmp").iterdir()), "upload left files in tmp/"


def mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    grey16 = (rng.integers(0, 65536, (12, 12))).astype(np.uint16)
    alpha = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    return {
        "grey": Image.fromarray(rgb[..., 0]),  # L
        "rgba": Image.fromarray(np.dstack([rgb, alpha])),  # RGBA, composited on black
        "grey16": Image.fromarray(grey16),  # I;16
        "palette": Image.fromarray(rgb).convert("P"),
        "grey_alpha": Image.fromarray(np.dstack([rgb[..., 0], alpha])).convert("LA"),
        "bilevel": Image.fromarray(rgb[..., 0]).convert("1"),
        "cmyk_jpeg": Image.fromarray(rgb).convert("CMYK"),
    }


def test_grayscale_rgba_16bit_converted_consistently(world: World) -> None:
    """Odd modes are accepted in datasets, and decode -> to_pixels gives the same pixels for training (the image
    cache) and for /predict (an image and its explicit 8-bit RGB conversion predict the same)."""
    from service.ml.data import build_image_cache, read_table, to_pixels

    imgs = mode_images()
    files = {f"images/{k}.{'jpg' if k.endswith('jpeg') else 'png'}": b.encode(v, "JPEG" if k.endswith("jpeg") else "PNG")
             for k, v in imgs.items()}
    rows = [(name, "circle" if i % 2 else "square") for i, name in enumerate(files)]
    data = b.dataset_zip(files, b.csv_labels(rows))
    db_before, tree_before = world.snapshot()
    r = world.upload(data, "modes.zip")
    assert r.status_code == 201, r.text
    assert r.json()["num_samples"] == len(files)
    assert new_rows(db_before, world.snapshot()[0]) == {"datasets": 1}
    assert_one_new_dataset(world, tree_before, r.json()["id"])

    # training path: the image cache of the stored archive
    stored = world.settings.DATA_DIR / "datasets" / r.json()["id"] / "dataset.zip"
    table = read_table(stored)
    cache = build_image_cache(stored, table, 16, 3, world.settings.DATA_DIR / "tmp" / "cache.npy")
    expected = {
        "grey": np.dstack([np.asarray(imgs["grey"])] * 3),
        "grey16": np.dstack([(np.asarray(imgs["grey16"]) >> 8).astype(np.uint8)] * 3),
        "rgba": ((np.asarray(imgs["rgba"])[..., :3].astype(np.uint16) * np.asarray(imgs["rgba"])[..., 3:] + 127)
                 // 255).astype(np.uint8),
    }
    for i, key in enumerate(table.keys):
        decoded = Image.open(io.BytesIO(files[key]))
        assert np.array_equal(cache[i], to_pixels(decoded, 16, 3)), key
        stem = key.split("/")[1].split(".")[0]
        if stem in expected:
            resized = np.asarray(Image.fromarray(expected[stem]).resize((16, 16), Image.Resampling.BILINEAR))
            assert np.array_equal(cache[i], resized), f"{stem} not converted as documented"
    (world.settings.DATA_DIR / "tmp" / "cache.npy").unlink()

    # inference path: the same images over /predict equal their explicit 8-bit RGB versions
    modes = ["grey", "rgba", "grey16", "palette", "grey_alpha"]
    odd = [b.encode(imgs[m]) for m in modes]
    rgb8 = [b.encode(Image.fromarray(to_pixels(imgs[m], imgs[m].width, 3))) for m in modes]
    for start in range(0, len(modes), 4):  # at most MAX_PREDICT_IMAGES per request
        p_odd, p_rgb = world.predict_json(odd[start : start + 4]), world.predict_json(rgb8[start : start + 4])
        assert p_odd.status_code == 200 and p_rgb.status_code == 200, (p_odd.text, p_rgb.text)
        assert p_odd.json()["predictions"] == p_rgb.json()["predictions"], modes[start : start + 4]


def test_bom_and_crlf_csv_accepted(world: World) -> None:
    data = ds(labels=b.csv_labels(ROWS, ("image", "category"), bom=True, newline="\r\n"))
    db_before, tree_before = world.snapshot()
    r = world.upload(data, "bom.zip")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["num_samples"] == len(ROWS)
    assert list(body["columns"]) == ["category"], body["columns"]  # not "\ufeffimage" / "category\r"
    assert body["columns"]["category"]["values"] == ["circle", "square"]
    assert new_rows(db_before, world.snapshot()[0]) == {"datasets": 1}
    assert_one_new_dataset(world, tree_before, body["id"])


def test_column_not_in_spec_is_ignored(world: World) -> None:
    """The labels dataset has columns (notes, shade, ...) no spec mentions: a job on 'category' alone is fine."""
    db_before, tree_before = world.snapshot()
    r = world.job(spec(dict(LABEL_TASK)))
    assert r.status_code == 202, r.text
    assert [t["name"] for t in r.json()["spec"]["tasks"]] == ["category"]
    assert new_rows(db_before, world.snapshot()[0]) == {"jobs": 1}
    assert world.snapshot()[1] == tree_before
    assert world.enqueued == [r.json()["id"]]


def test_unlabelled_images_are_accepted_with_a_warning(world: World) -> None:
    """Documented decision: images in the archive without a labels row are ignored and reported as a warning
    (datasets are often partially labelled folders); they are not samples."""
    data = ds(extra=[("images/unlabelled1.png", PNG), ("images/unlabelled2.png", PNG), ("README.txt", b"hi")])
    db_before, tree_before = world.snapshot()
    r = world.upload(data, "extra.zip")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["num_samples"] == len(ROWS)
    assert any("2 image(s) in the archive have no row in labels.csv" in w for w in body["warnings"]), body
    assert any("other file(s)" in w for w in body["warnings"]), body
    assert new_rows(db_before, world.snapshot()[0]) == {"datasets": 1}
    assert_one_new_dataset(world, tree_before, body["id"])


def test_audit_reports_label_problems_without_training(world: World) -> None:
    """The same label errors as a dry run: 200 with label_errors, nothing written."""
    before = world.snapshot()
    r = world.raw("POST", f"/v1/datasets/{world.ids['labels']}/audit",
                  json={"spec": spec({"name": "flag", "type": "binary"}, {"name": "nanval", "type": "regression"})})
    assert r.status_code == 200, r.text
    errors = " ".join(r.json()["audit"]["label_errors"])
    assert "'maybe' is not a valid boolean" in errors and "not a finite number" in errors
    assert world.snapshot() == before
