"""The client CLI's progress line and --watch drawing: batch progress within an epoch, images/s and ETA always
shown, the line fitted to the terminal by leaving parts out (never cut mid-word)."""

from __future__ import annotations

import io
import re

import pytest

from service.client.render import progress_line
from service.client.sse import Event
from service.client.watch import watch_job

EPOCH = {"epoch": 3, "epochs": 10, "val_loss": 0.52, "images_per_second": 412.4, "eta_seconds": 74,
         "val": {"category": {"loss": 0.3, "accuracy": 0.81}, "size": {"loss": 1.1, "mae": 1.234}}}
BATCH = {"epoch": 4, "epochs": 10, "batch": 12, "batches": 40, "images_per_second": 388.0, "eta_seconds": 3725}


def test_epoch_line_has_everything_when_it_fits() -> None:
    line = progress_line(EPOCH)
    assert line == ("[#######-----------------]  epoch 3/10  412 img/s  ETA 1m14s  val_loss 0.52  "
                    "category accuracy 0.81  size mae 1.23")


def test_batch_progress_moves_the_bar_within_an_epoch() -> None:
    line = progress_line(BATCH)
    assert line.startswith("[########----------------]  epoch 4/10 batch 12/40  388 img/s  ETA 1h02m")
    later = progress_line({**BATCH, "batch": 36})
    assert later.count("#") > line.count("#")  # (3 + 36/40) / 10 of the bar vs (3 + 12/40) / 10


@pytest.mark.parametrize("width", [200, 100, 80, 60, 50, 40])
def test_fitted_lines_drop_parts_instead_of_cutting(width: int) -> None:
    full = progress_line(EPOCH).split("  ")
    line = progress_line(EPOCH, width=width)
    assert len(line) < width or width < 40
    parts = line.split("  ")
    assert set(parts) <= set(full)  # whole parts only, in order
    assert [p for p in full if p in parts] == parts
    assert "412 img/s" in parts and "ETA 1m14s" in parts and "epoch 3/10" in parts


def test_narrower_than_the_essentials_keeps_them_whole() -> None:
    assert progress_line(BATCH, width=10) == "epoch 4/10 batch 12/40  388 img/s  ETA 1h02m"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Job:
    status = "succeeded"


class FakeClient:
    def __init__(self, events: list[Event]):
        self.events = events

    def job_events(self, job_id, last_event_id=None):
        yield from self.events

    def get_job(self, job_id):
        return Job()


def test_watch_redraws_progress_and_epochs_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: __import__("os").terminal_size((60, 20)))
    events = [Event("status", {"status": "running"}), Event("progress", {**BATCH, "epoch": 1, "batch": 5}),
              Event("progress", {**BATCH, "epoch": 1, "batch": 20}), Event("epoch", {**EPOCH, "epoch": 1}, "1"),
              Event("status", {"status": "succeeded"})]
    out = FakeTTY()
    assert isinstance(watch_job(FakeClient(events), "j", out), Job)
    frames = out.getvalue().split("\r\x1b[2K")[1:]
    where = [re.search(r"job j: running|epoch \d+/10( batch \d+/40)?", f).group(0) for f in frames]
    assert where == ["job j: running", "epoch 1/10 batch 5/40", "epoch 1/10 batch 20/40", "epoch 1/10"]
    assert all(len(f.rstrip("\n")) < 60 and "img/s  ETA " in f for f in frames[1:])


def test_watch_without_a_terminal_prints_one_line_per_epoch() -> None:
    events = [Event("progress", BATCH), Event("epoch", EPOCH, "3"), Event("status", {"status": "succeeded"})]
    out = io.StringIO()
    watch_job(FakeClient(events), "j", out)
    assert out.getvalue() == progress_line(EPOCH) + "\n"
