"""Dynamic batching: one queue per model version, flushed whenever an engine is free.

The batcher never sees protobuf: requests are dicts of per-sample NumPy arrays. Tiles whose arrays
have the same shapes and dtypes are stacked into one engine call of up to `max_batch_size`.
A tile's outcome goes to the callback it was queued with, on the event loop, in the very loop turn
that the engine thread wakes (no future and no extra turn on the path of every tile); `run_all`
wraps that in an awaitable for callers that want one.

Each engine instance has its own thread that takes batches from the shared queue, so the event loop
never blocks on an engine and hands a result back in one loop turn. When every instance is idle a
tile starts at once; under load, the tiles that arrived during the previous call form the next batch,
and an instance that frees up while another is still busy may wait up to `max_queue_delay` for more.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
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


Deliver = Callable[[TileOutputs | TilecastError], object]


@dataclass(eq=False)
class Ticket:
    """One queued tile. `cancel()` drops it: it leaves the queue, or its result is discarded."""

    sample: Feeds
    deliver: Deliver
    deadline: float | None  # time.monotonic() after which the result is of no use
    batcher: DynamicBatcher
    queued_at: float = field(default_factory=time.monotonic)
    key: BatchKey = field(init=False)
    settled: bool = False  # delivered or cancelled; set on the event loop only

    def __post_init__(self) -> None:
        self.key = _batch_key(self.sample)

    def cancel(self) -> None:
        if not self.settled:
            self.settled = True
            self.batcher.forget(self)

    def settle(self, outcome: TileOutputs | TilecastError) -> None:
        if not self.settled:
            self.settled = True
            self.deliver(outcome)


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
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_queue_delay_s: float = 0.0,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        """`runs` holds one engine call per instance; each gets its own thread."""
        self._runs = list(runs)
        self._max_batch = max_batch_size
        self._max_queue = max_queue_size
        self._delay = max_queue_delay_s
        self._name = name
        self._observer = observer
        self._pending: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()  # guards _pending, _busy, _stopping
        self._busy = 0
        self._stopping = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self.stats = BatchStats()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        for i, run in enumerate(self._runs):
            thread = threading.Thread(target=self._engine_loop, args=(run,), name=f"engine-{self._name}-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def enqueue(self, sample: Feeds, deliver: Deliver, deadline: float | None = None) -> Ticket:
        """Queue one tile's arrays; `deliver` receives its outputs or its error. Call from the event loop."""
        if self._closed or self._loop is None:
            raise Unavailable(f"model {self._name} is being unloaded; retry")
        if len(self._pending) >= self._max_queue:
            raise ResourceExhausted(
                f"model {self._name}: queue is full ({self._max_queue} tiles waiting); "
                "send fewer tiles at once or retry later"
            )
        ticket = Ticket(sample, deliver, deadline, self)
        with self._cond:
            self._pending.append(ticket)
            self._idle.clear()
            self._cond.notify()
        return ticket

    async def run_all(self, samples: Sequence[Feeds], deadline: float | None = None) -> list[TileOutputs]:
        """Queue several tiles and wait for all their outputs, in order; the first error fails them all.

        One future for the lot (not a task per tile), so a one-tile call costs no extra loop turns.
        Cancelling the wait drops whatever has not run.
        """
        assert self._loop is not None
        finished: asyncio.Future[None] = self._loop.create_future()
        results: list[TileOutputs | None] = [None] * len(samples)
        left = len(samples)

        def deliver(index: int, outcome: TileOutputs | TilecastError) -> None:
            nonlocal left
            if finished.done():
                return
            if not isinstance(outcome, TileOutputs):
                finished.set_exception(outcome)
                return
            results[index], left = outcome, left - 1
            if not left:
                finished.set_result(None)

        tickets: list[Ticket] = []
        try:
            for index, sample in enumerate(samples):
                tickets.append(self.enqueue(sample, functools.partial(deliver, index), deadline))
            await finished
        finally:
            for ticket in tickets:
                ticket.cancel()  # a no-op once delivered
        return [r for r in results if r is not None]

    def forget(self, ticket: Ticket) -> None:
        """A cancelled tile leaves the queue at once, so it neither runs nor counts against the limit."""
        # ValueError: already taken into a batch; its result is discarded when it comes.
        with self._cond, contextlib.suppress(ValueError):
            self._pending.remove(ticket)

    async def drain(self) -> None:
        """Wait until every queued tile has been computed."""
        while self._pending or self._busy:
            self._idle.clear()
            if not self._pending and not self._busy:
                break
            await self._idle.wait()

    async def close(self) -> None:
        """Refuse new tiles, finish the queued ones, then stop the engine threads."""
        self._closed = True
        await self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # -- engine threads --------------------------------------------------------------------

    def _take_batch(self) -> tuple[list[Ticket], list[Ticket]]:
        """Pop up to max_batch live requests with the first one's key, and the expired ones."""
        batch: list[Ticket] = []
        expired: list[Ticket] = []
        kept: collections.deque[Ticket] = collections.deque()
        now = time.monotonic()
        while self._pending and len(batch) < self._max_batch:
            request = self._pending.popleft()
            if request.settled:  # cancelled by its caller (read without the loop: at worst it runs once more)
                continue
            if request.deadline is not None and request.deadline <= now:
                expired.append(request)
                continue
            if batch and request.key != batch[0].key:
                kept.append(request)
                continue
            batch.append(request)
        kept.extend(self._pending)
        self._pending = kept
        return batch, expired

    def _engine_loop(self, run: RunBatch) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._pending:
                    return
                if self._delay and self._busy and len(self._pending) < self._max_batch:
                    until = time.monotonic() + self._delay
                    while len(self._pending) < self._max_batch and (left := until - time.monotonic()) > 0:
                        self._cond.wait(left)
                batch, expired = self._take_batch()
                self._busy += 1
            try:
                if expired:
                    self._post(self._expire, expired)
                if batch:
                    self._post(self._finish, batch, *self._compute(run, batch))
            finally:
                with self._cond:
                    self._busy -= 1
                    if not self._busy and not self._pending:
                        self._post(self._idle.set)

    def _compute(self, run: RunBatch, batch: list[Ticket]) -> tuple[list[Array] | TilecastError, float, float]:
        """Run one batch in this engine thread: (outputs or the error, start time, seconds)."""
        if len(batch) == 1:  # a view, no copy: the common case at low load
            feeds = {name: array[None] for name, array in batch[0].sample.items()}
        else:
            feeds = {name: np.stack([r.sample[name] for r in batch]) for name in batch[0].sample}
        started = time.monotonic()
        try:
            outputs: list[Array] | TilecastError = run(feeds)
        except TilecastError as exc:
            outputs = exc
        except Exception as exc:  # an engine failure must fail these tiles, not the engine thread
            log.exception("model %s: engine call failed", self._name)
            outputs = Internal(f"model {self._name}: engine failed on a batch of {len(batch)}: {exc}")
        return outputs, started, time.monotonic() - started

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    # -- back on the event loop ------------------------------------------------------------

    def _expire(self, requests: list[Ticket]) -> None:
        now = time.monotonic()
        for request in requests:
            self.stats.expired += 1
            request.settle(DeadlineExceeded(
                f"model {self._name}: deadline passed after {now - request.queued_at:.3f} s in the queue"))

    def _finish(self, batch: list[Ticket], outputs: list[Array] | TilecastError, started: float,
                compute: float) -> None:
        if isinstance(outputs, TilecastError):
            if self._observer:
                self._observer.batch_failed(len(batch))
            for request in batch:
                request.settle(outputs)
            return
        waits = [started - r.queued_at for r in batch]
        for i, request in enumerate(batch):
            request.settle(TileOutputs([out[i] for out in outputs], waits[i], compute, len(batch)))
        # Bookkeeping waits a turn, so the results it would delay go out first.
        assert self._loop is not None
        self._loop.call_soon(self._record, len(batch), waits, compute)

    def _record(self, size: int, waits: list[float], compute: float) -> None:
        s = self.stats
        s.batches += 1
        s.tiles += size
        s.largest_batch = max(s.largest_batch, size)
        s.batch_sizes[size] += 1
        if self._observer:
            self._observer.batch_done(size, waits, compute)
