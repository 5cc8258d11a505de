"""training.devices: 2 through a real `headwise worker` (Celery, PostgreSQL, Redis): the job's process launches
torchrun with 2 gloo ranks; one rank is SIGKILLed mid-training: torchrun stops the other, the attempt fails and the
job is queued again at once, the next attempt resumes from rank 0's checkpoint and the job succeeds once with one
version; no training process outlives the job. A spec the engine cannot run on several processes is a 422 naming
the field."""

from __future__ import annotations

import os
import signal

import pytest

from tests.chaos.conftest import Stack, chaos_spec
from tests.e2e.harness import cmdline, descendants, expect, poll_job, wait_until

pytestmark = pytest.mark.slow
EPOCHS = 15


def is_rank(cmd: str) -> bool:
    """A rank process (not torchrun, whose command line names the module too)."""
    return "service.ml.train.rank_main" in cmd and "torch.distributed.run" not in cmd


def _ranks(worker) -> list[int]:
    return [p for p in descendants(worker.popen.pid) if is_rank(cmdline(p))]


def test_two_process_job_survives_a_dying_rank(stack: Stack) -> None:
    worker = stack.start_worker()
    dataset = stack.upload_example()
    bad = chaos_spec(2)
    bad["training"]["devices"] = 2
    bad["weighting"] = {"strategy": "gradnorm"}
    err = expect(stack.client.post("/v1/jobs", json={"dataset_id": dataset, "model_name": "m", "spec": bad}), 422)
    assert "weighting.strategy" in str(err) and "training.devices=2" in str(err), err
    spec = chaos_spec(EPOCHS)
    spec["training"]["devices"] = 2
    body = {"dataset_id": dataset, "model_name": "ddp", "spec": spec}
    job_id = expect(stack.client.post("/v1/jobs", json=body), 202)["id"]

    def mid_training():
        job = stack.job(job_id)
        ranks = _ranks(worker)
        return ranks if job["status"] == "running" and job["progress"].get("epoch", 0) >= 3 and len(ranks) == 2 \
            else None

    ranks = wait_until("2 ranks to train 3 epochs", mid_training, 240, interval=0.2, proc=worker)
    before = stack.job(job_id)
    os.kill(ranks[-1], signal.SIGKILL)
    done = poll_job(stack.client, job_id, ["succeeded"], timeout=300, procs=[worker, stack.api])

    assert done["attempts"] == 2, done["attempts"]
    assert [h["epoch"] for h in done["history"]] == list(range(1, EPOCHS + 1))
    log = worker.output()
    assert "training on 2 processes" in log and "queued again, it resumes from its checkpoint" in log, log[-3000:]
    # the epochs reported before the kill came back from rank 0's checkpoint, not trained again
    assert done["history"][: len(before["history"])] == before["history"], "epochs before the kill were retrained"
    model = expect(stack.client.get("/v1/models/ddp"), 200)
    assert [(v["version"], v["job_id"]) for v in model["versions"]] == [(1, job_id)]
    assert all(h["train"]["category"]["loss"] is not None for h in done["history"])
    wait_until("no rank left", lambda: not _ranks(worker), 30, proc=worker)
