"""Dynamic batching: one queue per model version; the threads waiting for results run the engines.

The batcher never sees protobuf: requests are dicts of per-sample NumPy arrays. Tiles whose arrays
have the same shapes and dtypes are stacked into one engine call of up to `max_batch_size`.

There are no dedicated engine threads. A thread that waits for results (`wait_until`: a stream's
sender, a unary call, a stream's reader whose window is full) runs a batch itself whenever an
engine instance is free and tiles are queued. At low load a stream's sender therefore computes its
own tile and sends the result without waking any other thread: a thread hop after a long engine
call costs a tenth of a millisecond or more on small VMs. Under load, whichever waiter gets a free instance takes
every compatible queued tile, whichever stream it came from, and hands the others their results.
An instance that frees up while another is still busy may wait up to `max_queue_delay` for more.

All state is guarded by one condition; waiters' predicates are checked under it, and delivery
callbacks run under it, so they must be quick (append, count) and must not block.

The path from an engine call's return to the result's send is kept short: after tens of
milliseconds in the engine every Python function runs cold (several microseconds each on a small
VM), so a finished batch only settles its tiles and notes itself in a book; `keep_books()`, which a
sender calls after sending, brings `stats` and the metrics up to date.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import logging
import operator
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tilecast.proto.errors import DeadlineExceeded, Internal, ResourceExhausted, TilecastError, Unavailable
from tilecast.server.backends.base import Array
from tilecast.server.statistics import BatchStats, Done

log = logging.getLogger(__name__)

Feeds = dict[str, Array]
RunBatch = Callable[[Feeds], list[Array]]
BatchKey = tuple[tuple[str, tuple[int, ...], str], ...]


def _batch_key(sample: Feeds) -> BatchKey:
    return tuple((name, a.shape, a.dtype.str) for name, a in sorted(sample.items()))


@dataclass(slots=True)
class TileOutputs:
    """One tile's outputs (without the batch axis) and where its time went."""

    outputs: list[Array]
    queue_seconds: float
    compute_seconds: float
    batch_size: int


class BatchObserver(Protocol):
    """Receives what a metrics exporter needs; the batcher knows nothing of Prometheus."""

    def track(self, batcher: DynamicBatcher) -> None:
        """Read `batcher.in_flight` when metrics are collected (not on every tile)."""

    def batch_done(self, size: int, queue_seconds: Sequence[float], compute_seconds: float) -> None: ...

    def batch_failed(self, size: int) -> None: ...

    def tiles_expired(self, count: int) -> None: ...


Deliver = Callable[["Ticket", TileOutputs | TilecastError], object]


@dataclass(eq=False, slots=True)
class Ticket:
    """One queued tile. `cancel()` drops it: it leaves the queue, or its result is discarded."""

    sample: Feeds
    deliver: Deliver  # called under the batcher's lock
    deadline: float | None  # time.monotonic() after which the result is of no use
    batcher: DynamicBatcher
    queued_at: float = field(default_factory=time.monotonic)
    key: BatchKey = field(init=False)
    settled: bool = False  # delivered or cancelled; changed under the batcher's lock only

    def __post_init__(self) -> None:
        self.key = _batch_key(self.sample)

    def cancel(self) -> None:
        self.batcher.forget(self)

    def settle(self, outcome: TileOutputs | TilecastError) -> None:
        if not self.settled:
            self.settled = True
            self.deliver(self, outcome)


@dataclass(frozen=True)
class BatchLimits:
    """How a batcher was configured: for a model's description (Triton's model config)."""

    max_batch_size: int
    max_queue_size: int
    max_queue_delay_s: float
    instances: int


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
        """`runs` holds one engine call per instance; instances may compute at the same time."""
        self._free = list(runs)
        self._instances = len(self._free)
        self._max_batch = max_batch_size
        self._max_queue = max_queue_size
        self._delay = max_queue_delay_s
        self._name = name
        self._observer = observer
        self._pending: collections.deque[Ticket] = collections.deque()
        self._computing = 0  # tiles in engine calls now
        self._books: list[Done] = []  # finished batches not yet counted in stats and metrics
        self._expired_told = 0  # stats.expired as the observer last heard it
        # `with self._lock` rather than `with self._cond`: the same lock, without the Condition's
        # Python-level __enter__/__exit__ (after an engine call every Python function runs cold,
        # and each one costs microseconds of the tile's latency).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._sleepers = 0  # threads in self._cond.wait(): nobody to notify when there are none
        self._closed = False
        self.stats = BatchStats()
        if observer is not None:
            observer.track(self)

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(self._max_batch, self._max_queue, self._delay, self._instances)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def runnable(self) -> bool:
        """Tiles wait and an engine instance is free (read under the lock to act on it)."""
        return bool(self._pending) and bool(self._free)

    @property
    def in_flight(self) -> int:
        """Tiles queued or being computed."""
        return len(self._pending) + self._computing

    @property
    def busy(self) -> int:
        return self._instances - len(self._free)

    def enqueue(self, sample: Feeds, deliver: Deliver, deadline: float | None = None,
                queued: Callable[[Ticket], object] | None = None) -> Ticket:
        """Queue one tile's arrays; `deliver` receives its ticket and outputs or error. Any thread.

        `queued` sees the ticket under the lock, before any thread can compute it, so a caller can
        track it before its delivery can come.
        """
        with self._lock:
            if self._closed:
                raise Unavailable(f"model {self._name} is being unloaded; retry")
            if len(self._pending) >= self._max_queue:
                raise ResourceExhausted(
                    f"model {self._name}: queue is full ({self._max_queue} tiles waiting); "
                    "send fewer tiles at once or retry later"
                )
            ticket = Ticket(sample, deliver, deadline, self)
            if queued is not None:
                queued(ticket)
            self._pending.append(ticket)
            if self._sleepers:
                self._cond.notify_all()
        return ticket

    def forget(self, ticket: Ticket) -> None:
        """A cancelled tile leaves the queue at once, so it neither runs nor counts against the limit."""
        with self._lock:
            if ticket.settled:
                return
            ticket.settled = True
            with contextlib.suppress(ValueError):  # already taken into a batch: its result is dropped
                self._pending.remove(ticket)

    def notify(self, change: Callable[[], object] | None = None) -> None:
        """Apply `change` under the lock (if given) and wake every waiter to recheck its predicate."""
        with self._lock:
            if change is not None:
                change()
            if self._sleepers:
                self._cond.notify_all()

    def wait_until(self, ready: Callable[[], bool], timeout: float | None = None, *,
                   keep_books: bool = True) -> bool:
        """Block until `ready()` holds (checked under the lock), computing queued batches meanwhile.

        Returns False if `timeout` seconds pass first. With `keep_books=False`, `stats` and the
        observer hear of the batches computed here only at the next `keep_books()`: a caller about
        to send a result calls it after the send, so bookkeeping adds nothing to the tile's latency.
        """
        end = None if timeout is None else time.monotonic() + timeout
        try:
            with self._lock:
                while not ready():
                    if self.runnable:
                        self._run_one()
                        continue
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._sleep(left)
                return True
        finally:
            if keep_books:
                self.keep_books()

    def keep_books(self) -> None:
        """Count the batches finished so far in `stats` and tell the observer (outside the lock), with
        the tiles that expired in the queue since the last time."""
        if not self._books and self.stats.expired == self._expired_told:
            return
        with self._lock:
            books, self._books = self._books, []
            for done in books:
                self.stats.count(done)
            expired, self._expired_told = self.stats.expired - self._expired_told, self.stats.expired
        if self._observer is None:
            return
        if expired:
            self._observer.tiles_expired(expired)
        for done in books:
            if done.failed:
                self._observer.batch_failed(done.size)
            else:
                self._observer.batch_done(done.size, done.waits, done.compute)

    def statistics(self) -> BatchStats:
        """A copy of `stats`, with every finished batch counted."""
        self.keep_books()
        with self._lock:
            return copy.deepcopy(self.stats)

    def run_all(self, samples: Sequence[Feeds], deadline: float | None = None, *,
                keep_books: bool = True) -> list[TileOutputs]:
        """Queue several tiles and wait for all their outputs, in order; the first error fails them all."""
        results: list[TileOutputs | None] = [None] * len(samples)
        failure: list[TilecastError] = []

        def deliver(index: int, _ticket: Ticket, outcome: TileOutputs | TilecastError) -> None:
            if isinstance(outcome, TileOutputs):
                results[index] = outcome
            else:
                failure.append(outcome)

        tickets: list[Ticket] = []
        try:
            for index, sample in enumerate(samples):
                tickets.append(self.enqueue(sample, functools.partial(deliver, index), deadline))
            self.wait_until(lambda: bool(failure) or all(r is not None for r in results), keep_books=keep_books)
        finally:
            for ticket in tickets:
                ticket.cancel()  # a no-op once delivered
        if failure:
            raise failure[0]
        return [r for r in results if r is not None]

    def drain(self, timeout: float | None = None) -> bool:
        """Compute every queued tile (in this thread if need be) and wait for running batches."""
        return self.wait_until(lambda: not self._pending and not self.busy, timeout)

    def close(self) -> None:
        """Refuse new tiles and finish the queued ones."""
        with self._lock:
            self._closed = True
        self.drain()

    def _sleep(self, timeout: float | None) -> None:
        """Wait for a notification (with the lock held, as Condition.wait wants)."""
        self._sleepers += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._sleepers -= 1

    # -- computing, in whichever thread waits ----------------------------------------------

    def _run_one(self) -> None:
        """Take a free instance, then a batch, and compute it. Called and returns with the lock held."""
        run = self._free.pop()
        try:
            if self._delay and self.busy > 1 and len(self._pending) < self._max_batch:
                until = time.monotonic() + self._delay
                while len(self._pending) < self._max_batch and (left := until - time.monotonic()) > 0:
                    self._sleep(left)
            batch, expired = self._take_batch()
            if expired:
                self._expire(expired)
            if not batch:
                return
            self._computing += len(batch)
            self._lock.release()
            try:
                outputs, prepare, started, compute = self._compute(run, batch)
            finally:
                self._lock.acquire()
                self._computing -= len(batch)
            self._finish(batch, outputs, prepare, started, compute)
        finally:
            self._free.append(run)
            if self._sleepers:
                self._cond.notify_all()

    def _take_batch(self) -> tuple[list[Ticket], list[Ticket]]:
        """Pop up to max_batch live requests with the first one's key, and the expired ones."""
        batch: list[Ticket] = []
        expired: list[Ticket] = []
        kept: collections.deque[Ticket] = collections.deque()
        now = time.monotonic()
        while self._pending and len(batch) < self._max_batch:
            request = self._pending.popleft()
            if request.settled:
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

    def _compute(self, run: RunBatch,
                 batch: list[Ticket]) -> tuple[list[Array] | TilecastError, float, float, float]:
        """Run one batch without the lock: (outputs or the error, stacking seconds, engine start, seconds)."""
        taken = time.monotonic()
        if len(batch) == 1:  # a view, no copy: the common case at low load
            feeds = {name: array[None] for name, array in batch[0].sample.items()}
        else:
            feeds = {name: np.stack([r.sample[name] for r in batch]) for name in batch[0].sample}
        started = time.monotonic()
        try:
            outputs: list[Array] | TilecastError = run(feeds)
        except TilecastError as exc:
            outputs = exc
        except Exception as exc:  # an engine failure fails these tiles, not the thread that ran them
            log.exception("model %s: engine call failed", self._name)
            outputs = Internal(f"model {self._name}: engine failed on a batch of {len(batch)}: {exc}")
        return outputs, started - taken, started, time.monotonic() - started

    def _expire(self, requests: list[Ticket]) -> None:
        now = time.monotonic()
        for request in requests:
            self.stats.expire(now - request.queued_at)
            request.settle(DeadlineExceeded(
                f"model {self._name}: deadline passed after {now - request.queued_at:.3f} s in the queue"))

    def _finish(self, batch: list[Ticket], outputs: list[Array] | TilecastError, prepare: float, started: float,
                compute: float) -> None:
        if isinstance(outputs, TilecastError):
            for request in batch:
                request.settle(outputs)
            self._books.append(Done(len(batch), [started - r.queued_at for r in batch], prepare, compute, True))
            return
        size, waits = len(batch), []
        for i, request in enumerate(batch):  # loops, not comprehensions: each of those is a function call
            waits.append(started - request.queued_at)
            request.settle(TileOutputs(list(map(operator.itemgetter(i), outputs)), waits[-1], compute, size))
        self._books.append(Done(size, waits, prepare, compute, False))
