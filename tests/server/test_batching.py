"""The batcher on its own: who computes, how batches form, what a closed batcher refuses."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from tilecast.proto.errors import DeadlineExceeded, Internal, Unavailable
from tilecast.server.batching import DynamicBatcher, Feeds
from tilecast.server.metrics import Metrics


class RecordingEngine:
    """Doubles its input; remembers which thread ran each call and how many tiles it took."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, int]] = []

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        time.sleep(self.seconds)
        batch = feeds["x"]
        self.calls.append((threading.get_ident(), len(batch)))
        return [batch * 2]


def test_an_idle_engine_runs_in_the_waiting_thread() -> None:
    engine = RecordingEngine()
    batcher = DynamicBatcher([engine], max_batch_size=4, max_queue_size=8)
    [result] = batcher.run_all([{"x": np.full((2, 2), 3.0)}])
    assert np.array_equal(result.outputs[0], np.full((2, 2), 6.0))
    assert engine.calls == [(threading.get_ident(), 1)]


def test_tiles_queued_while_the_engine_computes_share_the_next_call() -> None:
    engine = RecordingEngine(seconds=0.5)
    batcher = DynamicBatcher([engine], max_batch_size=8, max_queue_size=64)
    results: dict[int, float] = {}

    def one(value: int) -> None:
        [out] = batcher.run_all([{"x": np.full((1,), float(value))}])
        results[value] = float(out.outputs[0][0])

    first = threading.Thread(target=one, args=(0,))
    first.start()
    time.sleep(0.1)  # the first tile is computing; the next six queue behind it
    others = [threading.Thread(target=one, args=(v,)) for v in range(1, 7)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(timeout=10)
    assert results == {v: 2.0 * v for v in range(7)}
    assert [size for _, size in engine.calls] == [1, 6]


def test_two_instances_compute_at_once() -> None:
    engines = [RecordingEngine(seconds=0.5), RecordingEngine(seconds=0.5)]
    batcher = DynamicBatcher(engines, max_batch_size=1, max_queue_size=8)
    started = time.monotonic()
    threads = [threading.Thread(target=batcher.run_all, args=([{"x": np.zeros(1)}],)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert all(len(engine.calls) == 1 for engine in engines)
    assert time.monotonic() - started < 0.9, "the two tiles ran one after the other"


def test_a_closed_batcher_finishes_its_queue_and_refuses_more() -> None:
    engine = RecordingEngine()
    batcher = DynamicBatcher([engine], max_batch_size=2, max_queue_size=8)
    delivered: list[object] = []
    for value in range(3):
        batcher.enqueue({"x": np.full((1,), float(value))}, lambda _ticket, outcome: delivered.append(outcome))
    batcher.close()  # nobody waited: the closing thread computes the queue itself
    assert len(delivered) == 3 and batcher.queued == 0
    with pytest.raises(Unavailable, match="being unloaded"):
        batcher.enqueue({"x": np.zeros(1)}, lambda _ticket, _outcome: None)


def test_bookkeeping_can_wait_until_the_results_are_sent() -> None:
    metrics = Metrics()
    batcher = DynamicBatcher([RecordingEngine()], max_batch_size=4, max_queue_size=8, name="m",
                             observer=metrics.observer("m"))

    def tiles_counted() -> float | None:
        return metrics.registry.get_sample_value("tilecast_tiles_total", {"model": "m"})

    batcher.run_all([{"x": np.ones(2)}], keep_books=False)
    assert batcher.stats.tiles == 0 and tiles_counted() == 0
    batcher.keep_books()  # what a stream's sender calls once it has sent
    assert (batcher.stats.batches, batcher.stats.tiles, tiles_counted()) == (1, 1, 1)
    batcher.run_all([{"x": np.ones(2)}, {"x": np.ones(2)}])  # by default, counted before it returns
    assert (batcher.stats.batches, batcher.stats.tiles, tiles_counted()) == (2, 3, 3)
    assert batcher.in_flight == 0


def test_statistics_count_each_tile_with_its_wait_and_its_batchs_engine_time() -> None:
    batcher = DynamicBatcher([RecordingEngine(seconds=0.2)], max_batch_size=8, max_queue_size=8)
    first = threading.Thread(target=batcher.run_all, args=([{"x": np.zeros(1)}],))
    first.start()
    time.sleep(0.1)
    batcher.run_all([{"x": np.zeros(1)}, {"x": np.zeros(1)}])  # queued behind the first: one batch of two
    first.join(timeout=10)
    stats = batcher.statistics()
    assert (stats.batches, stats.tiles, stats.failed.count) == (2, 3, 0)
    assert {size: calls.batches for size, calls in stats.by_size.items()} == {1: 1, 2: 1}
    assert stats.by_size[2].compute_seconds >= 0.2
    assert stats.computed.count == 3 and 0.6 <= stats.computed.seconds < 1.2  # the pair counts its call twice
    assert stats.queued.count == 3 and 0.1 <= stats.queued.seconds < 0.6  # the pair waited ~0.1 s each
    assert math.isclose(stats.succeeded.seconds, stats.queued.seconds + stats.prepared.seconds
                        + stats.computed.seconds)
    assert time.time() - 5 < stats.last_batch_at <= time.time()


def test_statistics_count_failed_and_expired_tiles() -> None:
    def broken(_feeds: Feeds) -> list[np.ndarray]:
        raise RuntimeError("the engine broke")

    batcher = DynamicBatcher([broken], max_batch_size=4, max_queue_size=8)
    with pytest.raises(Internal, match="the engine broke"):
        batcher.run_all([{"x": np.zeros(1)}, {"x": np.zeros(1)}])
    with pytest.raises(DeadlineExceeded):
        batcher.run_all([{"x": np.zeros(1)}], deadline=time.monotonic() - 1)
    stats = batcher.statistics()
    assert (stats.failed.count, stats.expired, stats.batches, stats.tiles, stats.succeeded.count) == (3, 1, 0, 0, 0)
    assert stats.last_batch_at == 0.0
