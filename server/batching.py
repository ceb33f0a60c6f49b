"""Dynamic batching: one queue per model version, one future per tile, flushed whenever an engine is free.

The batcher never sees protobuf: requests are dicts of per-sample NumPy arrays. Tiles whose arrays
have the same shapes and dtypes are stacked into one engine call of up to `max_batch_size`.

When every engine instance is idle, a tile starts at once. Under load, the tiles that arrived
during the previous call form the next batch; an instance that frees up while another is still
busy may wait up to `max_queue_delay` for a fuller batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tilecast.proto.errors import DeadlineExceeded, Internal, ResourceExhausted, TilecastError, Unavailable
from tilecast.server.backends.base import Array

log = logging.getLogger(__name__)

Feeds = dict[str, Array]
RunBatch = Callable[[Feeds], list[Array]]
BatchKey = tuple[tuple[str, tuple[int, ...], str], ...]


def _batch_key(sample: Feeds) -> BatchKey:
    return tuple((name, a.shape, a.dtype.str) for name, a in sorted(sample.items()))


@dataclass(frozen=True)
class TileOutputs:
    """One tile's outputs (without the batch axis) and where its time went."""

    outputs: list[Array]
    queue_seconds: float
    compute_seconds: float
    batch_size: int


class BatchObserver(Protocol):
    """Receives what a metrics exporter needs; the batcher knows nothing of Prometheus."""

    def batch_done(self, size: int, queue_seconds: Sequence[float], compute_seconds: float) -> None: ...

    def batch_failed(self, size: int) -> None: ...


@dataclass
class _Request:
    sample: Feeds
    future: asyncio.Future[TileOutputs]
    deadline: float | None  # time.monotonic() after which the result is of no use
    queued_at: float = field(default_factory=time.monotonic)
    key: BatchKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = _batch_key(self.sample)


@dataclass
class BatchStats:
    """Counters a test or a log line can read."""

    batches: int = 0
    tiles: int = 0
    largest_batch: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    expired: int = 0


class DynamicBatcher:
    def __init__(
        self,
        runs: Sequence[RunBatch],
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_queue_delay_s: float = 0.0,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        """`runs` holds one engine call per instance; instances run concurrently."""
        self._runs = list(runs)
        self._executor = executor
        self._max_batch = max_batch_size
        self._max_queue = max_queue_size
        self._delay = max_queue_delay_s
        self._name = name
        self._observer = observer
        self._pending: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._busy = 0
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self.stats = BatchStats()

    def start(self) -> None:
        self._idle.set()
        self._workers = [asyncio.create_task(self._work(run), name=f"batcher-{self._name}-{i}")
                         for i, run in enumerate(self._runs)]

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, sample: Feeds, deadline: float | None = None) -> TileOutputs:
        """Queue one tile's arrays and wait for its outputs."""
        if self._closed:
            raise Unavailable(f"model {self._name} is being unloaded; retry")
        if len(self._pending) >= self._max_queue:
            raise ResourceExhausted(
                f"model {self._name}: queue is full ({self._max_queue} tiles waiting); "
                "send fewer tiles at once or retry later"
            )
        request = _Request(sample, asyncio.get_running_loop().create_future(), deadline)
        self._pending.append(request)
        self._idle.clear()
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:  # its stream was cancelled: free its place in the queue now
            with contextlib.suppress(ValueError):
                self._pending.remove(request)
            raise

    async def drain(self) -> None:
        """Wait until every queued tile has been computed (new tiles may still arrive meanwhile)."""
        while self._pending or self._busy:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        """Refuse new tiles, finish the queued ones, then stop the workers."""
        self._closed = True
        await self.drain()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _take_batch(self) -> list[_Request]:
        """Pop up to max_batch live requests with the first one's key; others keep their place."""
        batch: list[_Request] = []
        kept: collections.deque[_Request] = collections.deque()
        now = time.monotonic()
        while self._pending and len(batch) < self._max_batch:
            request = self._pending.popleft()
            if request.future.done():  # cancelled by its caller
                continue
            if request.deadline is not None and request.deadline <= now:
                self.stats.expired += 1
                request.future.set_exception(DeadlineExceeded(
                    f"model {self._name}: deadline passed after {now - request.queued_at:.3f} s in the queue"))
                continue
            if batch and request.key != batch[0].key:
                kept.append(request)
                continue
            batch.append(request)
        kept.extend(self._pending)
        self._pending = kept
        return batch

    async def _wait_for_fuller_batch(self) -> None:
        deadline = time.monotonic() + self._delay
        while len(self._pending) < self._max_batch and (remaining := deadline - time.monotonic()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _work(self, run: RunBatch) -> None:
        while True:
            while not self._pending:
                if not self._busy:
                    self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._delay and self._busy and len(self._pending) < self._max_batch:
                await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._busy += 1
            try:
                await self._execute(run, batch)
            finally:
                self._busy -= 1
                if not self._busy and not self._pending:
                    self._idle.set()

    async def _execute(self, run: RunBatch, batch: list[_Request]) -> None:
        feeds = {name: np.stack([r.sample[name] for r in batch]) for name in batch[0].sample}
        started = time.monotonic()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, run, feeds)
        except TilecastError as exc:
            error: Exception = exc
        except Exception as exc:  # an engine failure must fail these tiles, not the worker
            log.exception("model %s: engine call failed", self._name)
            error = Internal(f"model {self._name}: engine failed on a batch of {len(batch)}: {exc}")
        else:
            compute = time.monotonic() - started
            waits = [started - r.queued_at for r in batch]
            self._record(len(batch), waits, compute)
            for i, request in enumerate(batch):
                if not request.future.done():
                    request.future.set_result(
                        TileOutputs([out[i] for out in outputs], waits[i], compute, len(batch)))
            return
        if self._observer:
            self._observer.batch_failed(len(batch))
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _record(self, size: int, waits: list[float], compute: float) -> None:
        s = self.stats
        s.batches += 1
        s.tiles += size
        s.largest_batch = max(s.largest_batch, size)
        s.batch_sizes[size] += 1
        if self._observer:
            self._observer.batch_done(size, waits, compute)
