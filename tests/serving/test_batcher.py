"""MicroBatcher: order, coalescing, lone-request latency, overload, failure isolation, cancellation."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from service.config import Settings
from service.serving.batcher import BatcherConfig, MicroBatcher, Overloaded
from service.serving.inference_thread import InferenceWorker


def images(*ids: int) -> np.ndarray:
    """(n, 2, 2, 1) uint8 whose first pixel is the id: results echo it back."""
    out = np.zeros((len(ids), 2, 2, 1), np.uint8)
    out[:, 0, 0, 0] = ids
    return out


class Net:
    """A fake network: echoes ids, records batch sizes, optionally sleeps and fails on id 255."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.sizes, self.threads = seconds, [], set()

    def __call__(self, batch: np.ndarray) -> list[dict]:
        self.sizes.append(len(batch))
        self.threads.add(threading.get_ident())
        if self.seconds:
            time.sleep(self.seconds)
        if 255 in batch[:, 0, 0, 0]:
            raise ValueError("bad image 255")
        return [{"id": int(v)} for v in batch[:, 0, 0, 0]]


@pytest.fixture
def executor():
    """A private inference thread per test (the process-wide one is shared by the app)."""
    return InferenceWorker()


def ids(results: list[dict]) -> list[int]:
    return [r["id"] for r in results]


async def started(b: MicroBatcher, net: Net, batch: np.ndarray) -> asyncio.Future:
    """Submit `batch` and return once the network is running it (not after a guessed sleep: CI machines stall)."""
    before = len(net.sizes)
    future = asyncio.ensure_future(b.submit(batch))
    deadline = time.perf_counter() + 10
    while len(net.sizes) == before:
        assert time.perf_counter() < deadline, "the batch never started"
        await asyncio.sleep(0.001)
    return future


def test_results_in_input_order_per_request(executor):
    net = Net(0.02)
    b = MicroBatcher(net, max_batch=64, max_wait_ms=2, worker=executor)

    async def main():
        reqs = [images(*range(10 * i, 10 * i + 1 + i % 3)) for i in range(12)]
        return reqs, await asyncio.gather(*(b.submit(r) for r in reqs))

    reqs, outs = asyncio.run(main())
    for r, out in zip(reqs, outs, strict=True):
        assert ids(out) == [int(v) for v in r[:, 0, 0, 0]]


def test_concurrent_requests_coalesce(executor):
    net = Net(0.05)
    b = MicroBatcher(net, max_batch=64, max_wait_ms=2, worker=executor)

    async def main():
        together = await asyncio.gather(*(b.submit(images(i)) for i in range(40)))
        first = await started(b, net, images(0))  # request 0 is running alone; 39 more arrive meanwhile, one by one
        rest = []
        for i in range(1, 40):
            rest.append(asyncio.ensure_future(b.submit(images(i))))
            await asyncio.sleep(0)
        return together, [await first] + list(await asyncio.gather(*rest))

    together, staggered = asyncio.run(main())
    assert [ids(o) for o in together] == [[i] for i in range(40)]
    assert [ids(o) for o in staggered] == [[i] for i in range(40)]
    # 40 at once: the first goes at once (idle), with whatever had queued by then; the rest in one more run.
    # Then: the first alone (idle), the 39 that queued behind it together.
    first_burst = len(net.sizes) - 2
    assert first_burst <= 2 and sum(net.sizes[:first_burst]) == 40
    assert net.sizes[first_burst:] == [1, 39]


def test_max_batch_bounds_batches_and_keeps_requests_whole(executor):
    net = Net(0.02)
    b = MicroBatcher(net, max_batch=8, max_wait_ms=2, worker=executor)

    async def main():
        return await asyncio.gather(*(b.submit(images(*range(3 * i, 3 * i + 3))) for i in range(10)))

    outs = asyncio.run(main())
    assert [ids(o) for o in outs] == [list(range(3 * i, 3 * i + 3)) for i in range(10)]
    assert max(net.sizes) <= 8 and all(s % 3 == 0 for s in net.sizes)
    assert net.sizes[1:4] == [6, 6, 6]


def test_request_larger_than_max_batch_runs_alone(executor):
    net = Net()
    b = MicroBatcher(net, max_batch=4, max_wait_ms=2, worker=executor)
    out = asyncio.run(b.submit(images(*range(10))))
    assert ids(out) == list(range(10)) and net.sizes == [10]


def test_lone_request_is_not_delayed_by_max_wait(executor):
    net = Net()
    b = MicroBatcher(net, max_batch=64, max_wait_ms=500, worker=executor)

    async def main():
        await b.submit(images(1))  # starts the runner
        times = []
        for i in range(5):
            t = time.perf_counter()
            await b.submit(images(i))
            times.append(time.perf_counter() - t)
            await asyncio.sleep(0.01)
        return times

    times = asyncio.run(main())
    assert max(times) < 0.1, times  # far below max_wait (0.5 s)
    assert net.sizes == [1] * 6


def test_request_arriving_while_busy_waits_at_most_max_wait(executor):
    """Queued behind a short run, a partial batch waits for more up to max_wait from its arrival, then goes."""
    net = Net(0.05)
    b = MicroBatcher(net, max_batch=64, max_wait_ms=100, worker=executor)

    async def main():
        first = await started(b, net, images(1))  # request 1 (lone) is running
        t = time.perf_counter()
        second = asyncio.ensure_future(b.submit(images(2)))  # arrives while busy
        await asyncio.sleep(0.03)
        third = asyncio.ensure_future(b.submit(images(3)))  # joins the filling batch
        await asyncio.gather(first, second, third)
        return time.perf_counter() - t

    waited = asyncio.run(main())
    assert net.sizes == [1, 2]
    assert 0.09 <= waited < 1.0, waited


def test_full_batch_goes_without_waiting(executor):
    net = Net(0.05)
    b = MicroBatcher(net, max_batch=4, max_wait_ms=5000, worker=executor)

    async def main():
        first = await started(b, net, images(0))  # request 0 is running: the next four queue behind it
        t = time.perf_counter()
        await asyncio.gather(first, *(b.submit(images(i)) for i in range(1, 5)))
        return time.perf_counter() - t

    assert asyncio.run(main()) < 1.0
    assert net.sizes == [1, 4]


def test_overload_raises_with_retry_after(executor):
    net = Net(0.05)
    b = MicroBatcher(net, max_batch=4, max_wait_ms=1, max_queue=6, worker=executor)

    async def main():
        running = await started(b, net, images(0))  # request 0 is running; the queue is empty
        queued = [asyncio.ensure_future(b.submit(images(1, 2, 3))), asyncio.ensure_future(b.submit(images(4, 5, 6)))]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await b.submit(images(7))
        assert info.value.retry_after >= 1 and "queue is full" in str(info.value)
        done = await asyncio.gather(running, *queued)
        assert [ids(d) for d in done] == [[0], [1, 2, 3], [4, 5, 6]]
        assert ids(await b.submit(images(8))) == [8]  # accepted again once drained

    asyncio.run(main())


def test_exception_reaches_only_the_failing_request(executor):
    net = Net(0.02)
    b = MicroBatcher(net, max_batch=64, max_wait_ms=2, worker=executor)

    async def main():
        reqs = [images(i, 100 + i) if i != 13 else images(i, 255) for i in range(10, 16)]
        return await asyncio.gather(*(b.submit(r) for r in reqs), return_exceptions=True)

    outs = asyncio.run(main())
    for i, out in zip(range(10, 16), outs, strict=True):
        if i == 13:
            assert isinstance(out, ValueError) and "bad image 255" in str(out)
        else:
            assert ids(out) == [i, 100 + i]


def test_wrong_result_count_is_an_error_not_a_hang(executor):
    b = MicroBatcher(lambda batch: [{}], max_batch=8, worker=executor)
    with pytest.raises(RuntimeError, match="1 results for 2 images"):
        asyncio.run(b.submit(images(1, 2)))


def test_cancelled_request_is_skipped(executor):
    net = Net(0.05)
    b = MicroBatcher(net, max_batch=64, max_wait_ms=1, worker=executor)

    async def main():
        first = await started(b, net, images(0))
        gone = asyncio.ensure_future(b.submit(images(1)))
        kept = asyncio.ensure_future(b.submit(images(2)))
        await asyncio.sleep(0)
        gone.cancel()
        assert ids(await kept) == [2] and ids(await first) == [0]

    asyncio.run(main())
    assert net.sizes == [1, 1]


def test_network_runs_in_one_thread_never_concurrently():
    """Two batchers (two model versions) share the process-wide inference thread."""
    active, peak, lock = [0], [0], threading.Lock()

    def make():
        def run(batch):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.01)
            with lock:
                active[0] -= 1
            return [{"t": threading.get_ident()} for _ in batch]
        return run

    a, b = MicroBatcher(make(), max_batch=2), MicroBatcher(make(), max_batch=2)

    async def main():
        return await asyncio.gather(*(x.submit(images(i)) for i in range(8) for x in (a, b)))

    outs = asyncio.run(main())
    assert peak[0] == 1
    assert len({o[0]["t"] for o in outs}) == 1


def test_metrics_hook_sees_batches(executor):
    seen, net = [], Net(0.02)
    b = MicroBatcher(net, max_batch=64, worker=executor,
                     on_batch=lambda n, reqs, waits, secs: seen.append((n, reqs, len(waits), secs >= 0)))

    async def main():
        first = await started(b, net, images(0, 0))
        await asyncio.gather(first, *(b.submit(images(i, i)) for i in range(1, 5)))

    asyncio.run(main())
    assert seen == [(2, 1, 1, True), (8, 4, 4, True)]


def _config(monkeypatch, **env: str) -> BatcherConfig:
    """BatcherConfig from the environment, through Settings (the one reader of HEADWISE_*)."""
    for name in ("PREDICT_MAX_BATCH", "PREDICT_MAX_WAIT_MS", "PREDICT_MAX_QUEUE", "TORCH_THREADS", "PREDICT_TRACE"):
        monkeypatch.delenv(f"HEADWISE_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"HEADWISE_{name}", value)
    return BatcherConfig.from_settings(Settings())


def test_config_from_settings(monkeypatch):
    cfg = _config(monkeypatch, PREDICT_MAX_BATCH="32", PREDICT_MAX_WAIT_MS="0.5", TORCH_THREADS="2",
                  PREDICT_TRACE="0")
    assert cfg == BatcherConfig(max_batch=32, max_wait_ms=0.5, max_queue=1024, torch_threads=2, trace=False)
    auto = _config(monkeypatch)
    assert auto.max_batch == 64 and auto.max_wait_ms == 2 and auto.max_queue == 1024 and auto.trace is True
    assert auto.torch_threads == max(1, len(os.sched_getaffinity(0)) - 1)
    assert _config(monkeypatch, TORCH_THREADS="auto").torch_threads == auto.torch_threads
    assert _config(monkeypatch, TORCH_THREADS="0").torch_threads == 0  # torch's default
    with pytest.raises(ValueError, match="PREDICT_MAX_QUEUE"):
        _config(monkeypatch, PREDICT_MAX_QUEUE="0")
    with pytest.raises(ValueError, match="PREDICT_MAX_BATCH"):
        _config(monkeypatch, PREDICT_MAX_BATCH="lots")
    with pytest.raises(ValueError, match="TORCH_THREADS"):
        _config(monkeypatch, TORCH_THREADS="-1")
    with pytest.raises(ValueError, match="PREDICT_TRACE"):
        _config(monkeypatch, PREDICT_TRACE="maybe")


def test_retired_batcher_finishes_its_queue_and_still_serves_late_requests(executor):
    net = Net(0.02)
    b = MicroBatcher(net, max_batch=64, worker=executor)

    async def main():
        first = await started(b, net, images(1))
        queued = asyncio.ensure_future(b.submit(images(2)))
        await asyncio.sleep(0)
        b.retire()
        assert ids(await first) == [1] and ids(await queued) == [2]
        await asyncio.sleep(0.01)
        assert b not in executor._ready  # nothing of it is left in the worker once its queue is empty
        assert ids(await b.submit(images(3))) == [3]  # a late request still gets served

    asyncio.run(main())


def test_lazy_requests_prepare_in_the_inference_thread_and_fail_alone(executor):
    net = Net(0.02)
    b = MicroBatcher(net, max_batch=64, worker=executor)
    prepared_in = []

    def prepare(*values):
        def run():
            prepared_in.append(threading.get_ident())
            if values == (99,):
                raise ValueError("files[0]: not an image")
            return images(*values)
        return run

    async def main():
        assert b.idle
        lone = await b.submit_lazy(prepare(1, 2), 2)
        first = await started(b, net, images(3))  # 3 is running; the next three join one batch
        rest = await asyncio.gather(b.submit_lazy(prepare(4), 1), b.submit_lazy(prepare(99), 1), b.submit(images(5)),
                                    return_exceptions=True)
        return lone, await first, rest

    lone, first, (four, bad, five) = asyncio.run(main())
    assert ids(lone) == [1, 2] and ids(first) == [3] and ids(four) == [4] and ids(five) == [5]
    assert isinstance(bad, ValueError) and "not an image" in str(bad)
    assert set(prepared_in) == net.threads and len(net.threads) == 1  # the inference thread
    assert net.sizes == [2, 1, 2]


def test_inference_thread_uses_only_the_batchers_public_side():
    """InferenceWorker drives a MicroBatcher through its public methods, never its private fields."""
    import ast
    from pathlib import Path

    import service.serving.inference_thread as thread_module

    tree = ast.parse(Path(thread_module.__file__).read_text())
    private = sorted({f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                      and isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls")})
    assert private == [], private
