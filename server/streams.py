"""The stream runner: one bidirectional call's messages read, queued, computed and answered, for both
protocols (tilecast.v1 `StreamPredict`, KServe `ModelStreamInfer`).

A protocol turns each message into a `Job` (its tiles, the batcher that computes them, how to answer
them) or fails the stream by raising; the runner owns the window, who reads, the order of answers,
cancellation and idle calls. Answers go out in the order their jobs settle.

Which thread reads follows the client's pace. While each message comes only after the previous
answer (a microscope that sends tiles as it acquires them, a client slower than the engine), the
call's own thread reads a message, computes it and sends the answer: nothing on the tile's path waits
for another thread to wake. Once the client sends ahead, a reader thread takes over reading, so tiles
queue and batch while the engine computes; at most `window` tiles are in flight, and with a full
window the reader waits (computing batches meanwhile) while gRPC's flow control holds the client back.

Reading moves to the reader when a read returns at once (the message had already arrived), when the
message is large, or when the engine holds other calls' work: on a busy CPU how long a read takes
says nothing, and a stream that sends ahead but is judged to wait for each answer would be served one
tile at a time while the others fill the batches. The reader tells the pace without timing: a message
it reads while none of the stream's tiles is in flight (and the engine is otherwise idle) came after
the client had every answer, and reading returns to the call's thread. Only the thread whose turn it
is calls next(requests), and only that thread passes the turn.

The call's thread also waits for results, computing whatever is queued when an engine is free, so at
low load it runs its own tile and sends the result itself. What the two threads share is changed
under the batcher's lock.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from tilecast.proto.errors import DeadlineExceeded, TilecastError
from tilecast.server.backends.base import Array
from tilecast.server.batching import DynamicBatcher, Feeds, Ticket, TileOutputs
from tilecast.server.boundary import Context, end_call
from tilecast.server.models import ModelManager, Served

log = logging.getLogger(__name__)

# A read that returns sooner than this found its message already received: the client sends ahead of
# the answers. Measured on 2 cores with 64 KB tiles: a waiting tile is read in ~90 µs (p95 ~140 µs);
# a client that sends each tile after the previous answer keeps a read waiting ≥ 150 µs (p1), ~600 µs
# at p50. Larger tiles are always read by the reader: gRPC's flow control lets only the first part of
# a message arrive before the server asks for it, so reading a waiting tile of 192 KB took 0.2-1.2 ms,
# one of 768 KB 0.3-3 ms, and timing cannot tell; next to moving that many bytes, a thread hop matters
# little. Timing is trusted only while the engine has no other work (see the module's docstring).
_SENT_AHEAD_S = 200e-6
_CALL_READS_UP_TO = 128 * 1024  # bytes of pixels


@dataclass(eq=False, slots=True)
class Job:
    """One message's tiles, and how the call's thread answers them once they are settled.

    `answer(job)` builds the reply from `outcomes` (in the order of `samples`) or `error` (the first
    failure: the job's other tiles are dropped); it may raise to fail the whole stream. A job without
    samples is answered at once (a request refused before computing)."""

    samples: list[Feeds]
    batcher: DynamicBatcher | None
    answer: Callable[[Job], object]
    deadline: float | None = None
    nbytes: int = 0  # of the image tiles: how large a read it was
    tag: Any = None  # what `answer` needs to know of the message
    outcomes: list[TileOutputs | None] = field(default_factory=list)
    error: TilecastError | None = None
    tickets: list[Ticket] = field(default_factory=list)
    left: int = 0


def answered(reply: object) -> Job:
    """A job with nothing to compute, answered with `reply`."""
    return Job([], None, lambda job: job.tag, tag=reply)


def stacked(results: list[TileOutputs]) -> list[Array]:
    """The outputs of several tiles, each with the batch axis first."""
    return [results[0].outputs[i][None] if len(results) == 1 else np.stack([r.outputs[i] for r in results])
            for i in range(len(results[0].outputs))]


class Leases:
    """The model versions a stream has used, each held until the stream ends (its engines stay)."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models
        self._held: dict[int, Served] = {}
        self._stack = contextlib.ExitStack()

    def hold(self, name: str, version: int) -> Served:
        with contextlib.ExitStack() as fresh:
            served = fresh.enter_context(self._models.lease(name, version))
            if id(served) not in self._held:
                self._held[id(served)] = served
                self._stack.push(fresh.pop_all())
        return served

    def close(self) -> None:
        self._stack.close()


class IdleWatch:
    """Ends the streams that have waited longer than `timeout_s` for a client's message while nothing
    of theirs was in flight (a client that opened a stream and sends nothing holds a call and a
    thread). One thread for the whole server, looking every tenth of the timeout; 0 turns it off."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._streams: set[StreamRunner] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, stream: StreamRunner) -> None:
        if not self.timeout_s:
            return
        with self._lock:
            self._streams.add(stream)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._watch, name="stream-idle-watch", daemon=True)
                self._thread.start()

    def discard(self, stream: StreamRunner) -> None:
        with self._lock:
            self._streams.discard(stream)

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        interval = min(1.0, max(0.02, self.timeout_s / 10))
        while not self._closed.wait(interval):
            with self._lock:
                streams = list(self._streams)
            now = time.monotonic()
            for stream in streams:
                stream.check_idle(now, self.timeout_s)


class StreamRunner:
    """One bidirectional call: `accept` turns each message into a Job (None: nothing to answer, such as
    a header), and `run` yields the replies. `reader_name` names the reader thread."""

    def __init__(self, accept: Callable[[Any], Job | None], window: int, context: Context, idle: IdleWatch,
                 reader_name: str) -> None:
        self._accept = accept
        self._window = window
        self._context = context
        self._idle = idle
        self._reader_name = reader_name
        self._batcher: DynamicBatcher | None = None  # the one this stream's tiles are in flight on
        self._batchers: list[DynamicBatcher] = []  # every one used, to wake on cancellation
        self._answers: collections.deque[Job] = collections.deque()
        self._waiting: set[Ticket] = set()
        self._reading_done = False
        self._failure: BaseException | None = None
        self._stopped = False
        self._reader: threading.Thread | None = None
        self._reader_reads = False  # whose turn it is to read: changed only by the thread holding it
        self._reader_wake = threading.Event()  # set while the reader may read, or must leave
        self._first_job = True
        self._reading_since: float | None = None  # while a thread waits in next(requests)
        self._idle_mark: tuple[float, float] | None = None  # (that read, when it was first seen idle)
        self._ended_idle = False
        self._waited_on: DynamicBatcher | None = None  # the batcher the call's thread waits on

    def run(self, requests: Iterator[Any]) -> Iterator[Any]:
        self._context.add_callback(functools.partial(self._notify_all, self._stop))  # however the call ended
        self._idle.add(self)
        try:
            while True:
                batcher = self._batcher
                if batcher is not None:
                    self._waited_on = batcher
                    batcher.wait_until(self._has_news_or_turn, keep_books=False)
                while self._answers:
                    job = self._answers.popleft()
                    yield job.answer(job)
                if batcher is not None:
                    batcher.keep_books()  # after the sends: metrics must not delay a result
                if self._failure is not None:
                    raise self._failure
                if self._over():
                    return
                if self._call_reads():
                    self._read_here(requests)
        finally:
            self._idle.discard(self)
            self._notify_all(self._abandon)
            for used in self._batchers:
                used.keep_books()  # also when the stream failed or was cancelled between sends

    def check_idle(self, now: float, timeout: float) -> None:
        """From the idle watch: end the call if it has waited for the client `timeout` s owing nothing."""
        since = self._reading_since
        if since is None or self._waiting or self._answers or self._stopped or self._ended_idle:
            self._idle_mark = None
            return
        if self._idle_mark is None or self._idle_mark[0] != since:
            self._idle_mark = (since, now)
        elif now - self._idle_mark[1] >= timeout:
            log.info("ending a stream that sent nothing for %.3g s", timeout)
            self._ended_idle = True
            end_call(self._context, DeadlineExceeded(
                f"the stream sent nothing for {timeout:g} s while every answer was sent; closed "
                "(--stream-idle-timeout-s)"))

    # -- reading -------------------------------------------------------------------------------

    def _next(self, requests: Iterator[Any]) -> Any:
        self._reading_since = time.monotonic()
        try:
            return next(requests, None)
        finally:
            self._reading_since = None

    def _read_here(self, requests: Iterator[Any]) -> None:
        """The call's thread reads one message; the reader reads the next if this one had already
        arrived, is large, or other work shares the engine."""
        asked = time.monotonic()
        try:
            message = self._next(requests)
        except grpc.RpcError:  # the call ended (cancelled): nothing to report
            self._notify_all(self._stop)
            return
        if message is None:
            self._notify(self._finish_reading)
            return
        waited = time.monotonic() - asked
        job = self._accept(message)
        if job is None:
            return
        # The first message usually comes with the call whatever the client's pace: its read says nothing.
        first, self._first_job = self._first_job, False
        self._switch_to(job.batcher)
        self._submit(job, self._queued)
        batcher = self._batcher
        shared = batcher is not None and batcher.in_flight > len(self._waiting)
        # Only once a batcher computes for the stream: before that (every request so far answered with
        # its own error) the call's thread reads on, and the reader would have no window to wait on.
        if batcher is not None and (job.nbytes > _CALL_READS_UP_TO
                                    or (not first and (waited < _SENT_AHEAD_S or shared))):
            self._reader_reads = True
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, args=(requests,), name=self._reader_name,
                                                daemon=True)
                self._reader.start()
            self._reader_wake.set()

    def _read(self, requests: Iterator[Any]) -> None:
        """The reader thread, while the client sends ahead."""
        try:
            while not self._leaving():
                if not self._reader_reads:
                    self._reader_wake.wait()
                    continue
                assert self._batcher is not None  # the call's thread queued a job before handing over
                self._batcher.wait_until(self._has_room)
                if self._stopped:
                    return
                message = self._next(requests)
                if message is None:
                    self._notify(self._finish_reading)
                    return
                job = self._accept(message)
                if job is not None:
                    self._drain_for(job.batcher)
                    self._submit(job, functools.partial(self._queued_by_reader, job.nbytes))
        except grpc.RpcError:  # the call ended (cancelled, or aborted by the sender): nothing to report
            self._notify_all(self._stop)
        except Exception as exc:
            self._notify(functools.partial(self._fail, exc))

    def _submit(self, job: Job, queued: Callable[[Ticket], object]) -> None:
        """Queue a job's tiles; one the batcher refuses (a full queue) settles the job with that error."""
        if job.batcher is None or not job.samples:
            self._notify(functools.partial(self._answers.append, job))
            return
        job.outcomes = [None] * len(job.samples)
        job.left = len(job.samples)
        try:
            for index, sample in enumerate(job.samples):
                job.tickets.append(job.batcher.enqueue(sample, functools.partial(self._done, job, index),
                                                       job.deadline, queued=queued))
        except TilecastError as exc:
            self._notify(functools.partial(self._done, job, -1, None, exc))

    def _switch_to(self, batcher: DynamicBatcher | None) -> None:
        """The call's thread, with nothing in flight, moves to the batcher of the job it read."""
        if batcher is not None and batcher is not self._batcher:
            self._batcher = batcher
            if batcher not in self._batchers:
                self._batchers.append(batcher)

    def _drain_for(self, batcher: DynamicBatcher | None) -> None:
        """The reader, before queueing on another model's batcher: let this one's tiles be answered,
        then move the call's thread (waiting on the old batcher) to the new one."""
        old = self._batcher
        if batcher is None or batcher is old or old is None:
            return
        old.wait_until(self._drained)
        old.notify(functools.partial(self._switch_to, batcher))

    # -- state changes and predicates, under the batcher's lock ----------------------------------

    def _queued(self, ticket: Ticket) -> None:
        self._waiting.add(ticket)

    def _queued_by_reader(self, nbytes: int, ticket: Ticket) -> None:
        # Nothing of this stream in flight and nothing else for the engine: the client waits for each
        # answer again (with other work queued, timing would misjudge it: the reader keeps reading).
        batcher = ticket.batcher
        if not self._waiting and not self._answers and nbytes <= _CALL_READS_UP_TO and not batcher.in_flight:
            self._reader_reads = False
            self._reader_wake.clear()
        self._waiting.add(ticket)

    def _done(self, job: Job, index: int, ticket: Ticket | None, outcome: TileOutputs | TilecastError) -> None:
        if ticket is not None:
            self._waiting.discard(ticket)
        if job.error is not None or (job.left == 0 and job.outcomes):
            return  # settled already (another of its tiles failed)
        if isinstance(outcome, TileOutputs):
            job.outcomes[index] = outcome
            job.left -= 1
            if job.left:
                return
        else:
            job.error = outcome
            for other in job.tickets:
                if other is not ticket:
                    other.cancel()  # the lock is re-entrant
                    self._waiting.discard(other)
        self._answers.append(job)

    def _has_room(self) -> bool:
        return len(self._waiting) < self._window or self._stopped

    def _drained(self) -> bool:
        return (not self._waiting and not self._answers) or self._stopped or self._failure is not None

    def _over(self) -> bool:
        """The call ended, or every message has been read and answered."""
        return self._stopped or (self._reading_done and not self._waiting)

    def _leaving(self) -> bool:
        """Nothing more to read, for either thread."""
        return self._stopped or self._reading_done or self._failure is not None

    def _call_reads(self) -> bool:
        """The call's thread is to read the next message: its turn, and none of the stream's tiles in flight."""
        return not self._reader_reads and not self._waiting and not self._answers and not self._leaving()

    def _has_news_or_turn(self) -> bool:
        return (bool(self._answers) or self._failure is not None or self._over() or self._call_reads()
                or self._batcher is not self._waited_on)

    def _notify(self, change: Callable[[], object]) -> None:
        if self._batcher is None:
            change()  # nothing computes yet: no other thread to tell
        else:
            self._batcher.notify(change)

    def _notify_all(self, change: Callable[[], object]) -> None:
        if not self._batchers:
            change()
        for batcher in self._batchers:
            batcher.notify(change)

    def _stop(self) -> None:
        self._stopped = True
        self._reader_wake.set()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._reader_wake.set()

    def _finish_reading(self) -> None:
        self._reading_done = True
        self._reader_wake.set()

    def _abandon(self) -> None:
        """On error or cancellation, drop this stream's queued work; other streams are untouched."""
        self._stop()
        for ticket in self._waiting:
            ticket.cancel()  # the lock is re-entrant
        self._waiting.clear()
