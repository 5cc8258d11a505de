"""kill -9 the API process during a training job and during an upload, then start it again: nothing committed is
lost (keys, datasets, jobs, models), the job keeps training in the worker and finishes, and the interrupted upload
leaves no dataset row; its partial file in tmp/ is swept once it is stale."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from tests.chaos.conftest import Stack
from tests.e2e.harness import expect, poll_job, sample_images, wait_until

pytestmark = pytest.mark.slow
EPOCHS = 60


def slow_upload(base_url: str, headers: dict, errors: list) -> None:
    """A multipart upload that trickles in (never finishes on its own)."""
    boundary = "chaosboundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.zip\"\r\n"
               "Content-Type: application/zip\r\n\r\n").encode()
        for _ in range(600):
            yield b"PK" + b"\0" * 4094
            time.sleep(0.05)

    try:
        httpx.post(f"{base_url}/v1/datasets", content=body(), timeout=60,
                   headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    except httpx.HTTPError as exc:
        errors.append(exc)


def test_api_killed_and_restarted_loses_nothing(stack: Stack) -> None:
    worker = stack.start_worker()
    key = expect(stack.client.post("/v1/keys", json={"name": "user", "team": "default",
                                                     "scopes": ["datasets:write", "jobs:write", "models:read",
                                                                "predict"]}), 201)["key"]
    dataset = stack.upload_example()
    job_id = stack.create_job(dataset, EPOCHS, "chaos-api")
    wait_until("the job to start training", lambda: stack.job(job_id)["progress"].get("epoch", 0) >= 1, 150,
               interval=0.2, proc=worker)

    errors: list = []
    uploader = threading.Thread(target=slow_upload, args=(stack.base_url, stack.auth(key), errors), daemon=True)
    uploader.start()
    tmp_dir = stack.data_dir / "tmp"
    wait_until("the upload to reach tmp/", lambda: any(p.stat().st_size > 0 for p in tmp_dir.iterdir()), 30)

    stack.kill(stack.api)  # mid-upload and mid-training
    uploader.join(30)
    assert errors, "the interrupted upload should have failed on the client side"
    partial = [p for p in tmp_dir.iterdir()]
    assert partial, "expected the crash to leave the partial upload in tmp/"
    time.sleep(2)  # the worker keeps training without the API

    stale = time.time() - 7 * 24 * 3600  # a partial upload from a crash long ago
    os.utime(partial[0], (stale, stale))
    stack.start_api()
    assert not partial[0].exists(), "a stale partial upload in tmp/ was not swept at start"
    user = httpx.Client(base_url=stack.base_url, headers=stack.auth(key), timeout=60)
    try:
        datasets = expect(user.get("/v1/datasets"), 200)["items"]
        assert [d["id"] for d in datasets] == [dataset]  # the interrupted upload left no row
        done = poll_job(user, job_id, ["succeeded"], timeout=180, procs=[worker, stack.api])
        assert done["attempts"] == 1 and done["model"] == {"name": "chaos-api", "version": 1}
        assert [h["epoch"] for h in done["history"]] == list(range(1, EPOCHS + 1))
        name, image = sample_images(stack.tmp / "dataset" / "example.zip", 1)[0]
        pred = expect(user.post("/v1/models/chaos-api/predict", files=[("files", (name, image, "image/png"))]), 200)
        assert len(pred["predictions"]) == 1
    finally:
        user.close()
