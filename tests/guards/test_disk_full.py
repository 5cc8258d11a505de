"""A full disk (a 4 MiB tmpfs as DATA_DIR): an upload answers 507 and an artifact/checkpoint write fails the job,
nothing partial is left (file or row), and the service keeps serving. Real api + worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import expect, expect_error, make_dataset, poll_job, tiny_spec

pytestmark = pytest.mark.slow


def fill(data_dir: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on data_dir's filesystem."""
    st = os.statvfs(data_dir)
    free = st.f_bavail * st.f_frsize
    filler = data_dir / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def leftovers(data_dir: Path) -> list[str]:
    """Files under tmp/, jobs/ and artifacts/ (all must be empty after a failure)."""
    out = []
    for sub in ("tmp", "jobs", "artifacts"):
        out += [str(p.relative_to(data_dir)) for p in (data_dir / sub).rglob("*") if p.is_file()]
    return out


def test_upload_on_a_full_disk_answers_507_and_leaves_nothing(small_disk, make_stack, tmp_path):
    stack = make_stack()
    assert stack.data_dir == small_disk
    filler = fill(small_disk, leave=256 * 1024)
    junk = tmp_path / "big.zip"
    junk.write_bytes(os.urandom(320 * 1024))  # meets ENOSPC while streaming to tmp/ (before any validation)
    with open(junk, "rb") as fh:
        body = expect_error(stack.client.post("/v1/datasets", files={"file": ("big.zip", fh)}), 507,
                            "InsufficientStorage")
    assert "disk is full" in body["detail"], body
    assert leftovers(small_disk) == [] and not any((small_disk / "datasets").glob("*"))
    assert expect(stack.client.get("/v1/datasets"), 200)["total"] == 0
    assert expect(stack.client.get("/ready"), 200)["status"] == "ok"
    filler.unlink()  # space again: the same service takes the next upload
    path = make_dataset(tmp_path / "ok", n=48)
    with open(path, "rb") as fh:
        expect(stack.client.post("/v1/datasets", files={"file": (path.name, fh)}), 201)


def test_training_writes_on_a_full_disk_fail_the_job_once_and_leave_nothing(small_disk, make_stack, tmp_path):
    stack = make_stack()
    worker = stack.start_worker()
    path = make_dataset(tmp_path / "ds", n=96)
    with open(path, "rb") as fh:
        ds = expect(stack.client.post("/v1/datasets", files={"file": (path.name, fh)}), 201)["id"]
    spec = tiny_spec(epochs=2)
    spec["model"].update(width=64, head_hidden=1024)  # ~1 MB of weights: a ~3 MB checkpoint does not fit
    filler = fill(small_disk, leave=512 * 1024)
    job_id = expect(stack.client.post("/v1/jobs", json={"dataset_id": ds, "model_name": "full",
                                                        "spec": spec}), 202)["id"]
    job = poll_job(stack.client, job_id, ("failed",), timeout=240, procs=[worker])
    assert job["attempts"] == 1 and job["error"].startswith("the disk is full"), job
    assert leftovers(small_disk) == [], leftovers(small_disk)
    assert expect(stack.client.get("/v1/models"), 200) in ([], {"items": []}) or \
        not expect(stack.client.get("/v1/models"), 200).get("items")
    assert expect(stack.client.get("/ready"), 200)["status"] == "ok"
    filler.unlink()
    ok = expect(stack.client.post("/v1/jobs", json={"dataset_id": ds, "model_name": "fits",
                                                    "spec": tiny_spec(epochs=1)}), 202)["id"]
    poll_job(stack.client, ok, ("succeeded",), timeout=240, procs=[worker])
