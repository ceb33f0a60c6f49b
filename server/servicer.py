"""The tilecast.v1.Inference servicer: protobuf in, NumPy to the batchers, protobuf out.

Handlers run in the gRPC server's thread pool, one thread per call, and wait on the batchers, which
lets the thread that will send a result compute it too (`tilecast.server.batching`). Typed errors
become gRPC status codes here, in one place (`_abort` and the two decorators).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
import numpy as np

from tilecast.proto import wire
from tilecast.proto.errors import DeadlineExceeded, InvalidArgument, TilecastError
from tilecast.proto.tile_reader import PredictView, TileView
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.backends.base import Array
from tilecast.server.batching import Ticket, TileOutputs
from tilecast.server.metrics import Metrics
from tilecast.server.models import ModelManager, Served
from tilecast.server.settings import Settings
from tilecast.server.validation import parameter_feeds

log = logging.getLogger(__name__)

# Tiles come in as views of the received bytes (`tilecast.proto.tile_reader`: a stream's tiles, a
# unary request), results go out pre-encoded (`tilecast.proto.wire`); other messages as the generated classes.
StreamRequest: TypeAlias = TileView | inference_pb2.StreamPredictRequest
StreamReply: TypeAlias = bytes | inference_pb2.StreamPredictResponse
Req = TypeVar("Req")
Resp = TypeVar("Resp")
# grpc ships no type information; this names what the handlers receive.
Context: TypeAlias = Any  # grpc.ServicerContext


def _abort(context: Context, exc: BaseException) -> NoReturn:
    if isinstance(exc, TilecastError):
        context.abort(exc.code, str(exc))
    log.exception("unexpected error in a request", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}: {exc}")
    raise AssertionError("context.abort returned")  # it raises, but grpc does not say so


def _model_of(request: object) -> str:
    return getattr(request, "model", "") or getattr(request, "name", "") or getattr(request, "model_name", "")


def unary_errors(
    handler: Callable[[Any, Req, Context], Resp],
) -> Callable[[Any, Req, Context], Resp]:
    @functools.wraps(handler)
    def wrapper(self: Any, request: Req, context: Context) -> Resp:  # a RequestCounter
        code = "OK"
        try:
            return handler(self, request, context)
        except Exception as exc:
            code = exc.code.name if isinstance(exc, TilecastError) else "INTERNAL"
            _abort(context, exc)
        finally:
            # Counted once the answer is out (the callback runs after the status is sent), unless
            # the call has already ended.
            count = functools.partial(self.count, _model_of(request), handler.__name__, code)
            if not context.add_callback(count):
                count()

    return wrapper


@dataclass
class CallRecord:
    """What a streaming handler learns as it goes, for the request counter."""

    model: str = ""
    code: str = "OK"
    # The handler counts each request of the stream itself (KServe's ModelStreamInfer, as Triton counts
    # a stream's requests); the call is then counted only if it fails as a whole.
    counts_requests: bool = False


def stream_errors(
    handler: Callable[[Any, Req, Context, CallRecord], Iterator[Resp]],
) -> Callable[[Any, Req, Context], Iterator[Resp]]:
    @functools.wraps(handler)
    def wrapper(self: RequestCounter, requests: Req, context: Context) -> Iterator[Resp]:
        record = CallRecord()
        try:
            yield from handler(self, requests, context, record)
            if not context.is_active():
                record.code = "CANCELLED"
        except GeneratorExit:  # gRPC dropped the response iterator: the client went away
            record.code = "CANCELLED"
            raise
        except Exception as exc:
            record.code = exc.code.name if isinstance(exc, TilecastError) else "INTERNAL"
            _abort(context, exc)
        finally:
            if not record.counts_requests or record.code != "OK":
                self.count(record.model, handler.__name__, record.code)

    return wrapper


def deadline_of(context: Context) -> float | None:
    """The call's deadline on the batcher's clock (time.monotonic), if the client set one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def run_batch(served: Served, samples: list[dict[str, Array]], deadline: float | None, context: Context, *,
              books_after_send: bool = True) -> tuple[list[Array], TileOutputs]:
    """Compute a batch of tiles (batched with everyone else's); each output with the batch axis first,
    and the result of the tile that took longest (for the reply's timing).

    Metrics are counted once the call's answer is sent, or at once with `books_after_send=False`
    (a stream answers many batches in one call)."""
    later = books_after_send and context.add_callback(served.batcher.keep_books)
    results = served.batcher.run_all(samples, deadline, keep_books=not later)
    outputs = [results[0].outputs[i][None] if len(results) == 1 else np.stack([r.outputs[i] for r in results])
               for i in range(len(results[0].outputs))]
    return outputs, max(results, key=lambda r: r.queue_seconds + r.compute_seconds)


def _timing(result: TileOutputs) -> wire.Timing:
    return int(result.queue_seconds * 1e6), int(result.compute_seconds * 1e6), result.batch_size


class RequestCounter:
    """What `unary_errors` and `stream_errors` need of a servicer: the finished-calls counter."""

    _metrics: Metrics

    def count(self, model: str, method: str, code: str) -> None:
        self._metrics.requests.labels(model or "-", method, code).inc()


class InferenceServicer(RequestCounter, inference_pb2_grpc.InferenceServicer):
    def __init__(self, models: ModelManager, metrics: Metrics, settings: Settings) -> None:
        self._models = models
        self._metrics = metrics
        self._settings = settings

    @unary_errors
    def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: Context
    ) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=self._models.statuses())

    @unary_errors
    def GetModel(
        self, request: inference_pb2.GetModelRequest, context: Context
    ) -> inference_pb2.GetModelResponse:
        return inference_pb2.GetModelResponse(manifest=self._models.resolve(request.name, request.version).manifest)

    @unary_errors
    def Predict(self, request: PredictView, context: Context) -> bytes:
        with self._models.lease(request.model, request.version) as served:
            batch = served.check.view(request.dtype, request.shape, request.data, batched=True)
            extra = parameter_feeds(served.spec, request.parameters)
            name, deadline = served.check.input_name, deadline_of(context)
            outputs, slowest = run_batch(served, [{name: t, **extra} for t in batch], deadline, context)
            return wire.predict_response(served.entry.name, served.entry.version, outputs, _timing(slowest))

    @stream_errors
    def StreamPredict(
        self, requests: Iterator[StreamRequest], context: Context, record: CallRecord
    ) -> Iterator[StreamReply]:
        first = next(requests, None)
        if first is None:
            return
        if isinstance(first, TileView) or first.WhichOneof("item") != "header":
            raise InvalidArgument("the first message of a stream must be a header naming the model")
        record.model = first.header.model
        with self._models.lease(first.header.model, first.header.version) as served:
            extra = parameter_feeds(served.spec, first.header.parameters)
            stream = _TileStream(served, extra, self._settings.max_tiles_in_flight_per_stream, deadline_of(context))
            yield from stream.run(requests, context)


@dataclass(slots=True)
class _Answer:
    """A settled tile, encoded by the stream's sender rather than under the batcher's lock."""

    tile_id: int
    outcome: TileOutputs | TilecastError
    own_deadline: bool


# A read that returns sooner than this found its tile already received: the client sends ahead of
# the answers. Measured on 2 cores with 64 KB tiles: a waiting tile is read in ~90 µs (p95 ~140 µs);
# a client that sends each tile after the previous answer keeps a read waiting ≥ 150 µs (p1), ~600 µs
# at p50. Larger tiles are always read by a reader thread: gRPC's flow control lets only the first
# part of a message arrive before the server asks for it, so reading a waiting tile of 192 KB took
# 0.2-1.2 ms, one of 768 KB 0.3-3 ms, and timing cannot tell; next to moving that many bytes, a
# thread hop matters little.
_SENT_AHEAD_S = 200e-6
_CALL_READS_UP_TO = 128 * 1024  # bytes of pixels


class _TileStream:
    """One StreamPredict call: its tiles are read, validated, queued, computed and answered.

    Which thread reads follows the client's pace. While each tile comes only after the previous
    answer (a microscope that sends tiles as it acquires them, a client slower than the engine),
    the call's own thread reads a tile, computes it and sends the result: nothing on the tile's path
    waits for another thread to wake. Once a read finds its tile already received, the client sends
    ahead, and a reader thread (started then) takes over reading, so tiles queue and batch while the
    engine computes; at most `window` are in flight, and with a full window the reader waits
    (computing batches meanwhile) while gRPC's flow control holds the client back. When the reader
    reads a tile while none of the stream's tiles is in flight, the client is back to one at a time
    and reading returns to the call's thread. Tiles over `_CALL_READS_UP_TO` bytes are read by the
    reader. Only the thread whose turn it is calls next(requests), and only that thread passes the turn.

    The call's thread also waits for results, computing whatever is queued when an engine is free,
    so at low load it runs its own tile and sends the result itself. Everything the two threads
    share is changed under the batcher's lock.
    """

    def __init__(self, served: Served, extra: dict[str, Array], window: int, deadline: float | None) -> None:
        self._version = served.entry.version
        self._check = served.check
        self._input = self._check.input_name
        self._batcher = served.batcher
        self._extra = extra
        self._window = window
        self._deadline = deadline
        self._answers: collections.deque[_Answer] = collections.deque()
        self._waiting: set[Ticket] = set()
        self._reading_done = False
        self._failure: BaseException | None = None
        self._stopped = False
        self._reader: threading.Thread | None = None
        self._reader_reads = False  # whose turn it is to read: changed only by the thread holding it
        self._reader_wake = threading.Event()  # set while the reader may read, or must leave
        self._first_read = True

    def run(self, requests: Iterator[StreamRequest], context: Context) -> Iterator[StreamReply]:
        context.add_callback(lambda: self._batcher.notify(self._stop))  # the call ended, however it ended
        try:
            while True:
                self._batcher.wait_until(self._has_news_or_turn, keep_books=False)
                while self._answers:
                    yield self._encode(self._answers.popleft())
                self._batcher.keep_books()  # after the sends: metrics must not delay a result
                if self._failure is not None:
                    raise self._failure
                if self._over():
                    return
                if self._call_reads():
                    self._read_here(requests)
        finally:
            self._batcher.notify(self._abandon)
            self._batcher.keep_books()  # also when the stream failed or was cancelled between sends

    def _read_here(self, requests: Iterator[StreamRequest]) -> None:
        """The call's thread reads one tile; if it had already arrived (or is large), the reader reads next."""
        asked = time.monotonic()
        try:
            request = next(requests, None)
        except grpc.RpcError:  # the call ended (cancelled): nothing to report
            self._batcher.notify(self._stop)
            return
        if request is None:
            self._batcher.notify(self._finish_reading)
            return
        waited = time.monotonic() - asked
        # The first tile usually comes with the header whatever the client's pace: its read says nothing.
        first, self._first_read = self._first_read, False
        if self._queue(request, self._queued) > _CALL_READS_UP_TO or (waited < _SENT_AHEAD_S and not first):
            self._reader_reads = True
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, args=(requests,), name="stream-reader",
                                                daemon=True)
                self._reader.start()
            self._reader_wake.set()

    def _queue(self, request: StreamRequest, queued: Callable[[Ticket], object]) -> int:
        """Check one received message and queue its tile (a bad tile fails the stream); its size in bytes."""
        if isinstance(request, TileView):
            message = request
        elif request.WhichOneof("item") == "tile":
            message = TileView.of(request.tile)
        else:
            raise InvalidArgument("a stream carries one header, then only tiles")
        try:
            tile = self._check.view(message.dtype, message.shape, message.data, batched=False)
        except InvalidArgument as exc:
            raise InvalidArgument(f"tile {message.id}: {exc}") from exc
        deadline, budget_ms = self._deadline, message.deadline_ms
        if budget_ms:
            own = time.monotonic() + budget_ms / 1000
            deadline = own if deadline is None else min(deadline, own)
        self._batcher.enqueue({self._input: tile, **self._extra},
                              functools.partial(self._done, message.id, bool(budget_ms)), deadline, queued=queued)
        return tile.nbytes

    def _encode(self, answer: _Answer) -> StreamReply:
        outcome = answer.outcome
        if isinstance(outcome, TileOutputs):
            return wire.stream_result(answer.tile_id, outcome.outputs, _timing(outcome), self._version)
        if isinstance(outcome, DeadlineExceeded) and answer.own_deadline:  # this tile's budget ran out: answer, go on
            message = inference_pb2.TileResult(id=answer.tile_id, code=outcome.code.value[0], message=str(outcome))
            return inference_pb2.StreamPredictResponse(result=message, version=self._version)
        raise outcome

    # -- the reader thread, while the client sends ahead --------------------------------------

    def _read(self, requests: Iterator[StreamRequest]) -> None:
        try:
            while not self._leaving():
                if not self._reader_reads:
                    self._reader_wake.wait()
                    continue
                self._batcher.wait_until(self._has_room)
                if self._stopped:
                    return
                request = next(requests, None)
                if request is None:
                    self._batcher.notify(self._finish_reading)
                    return
                self._queue(request, self._queued_by_reader)
        except grpc.RpcError:  # the call ended (cancelled, or aborted by the sender): nothing to report
            self._batcher.notify(self._stop)
        except Exception as exc:
            self._batcher.notify(functools.partial(self._fail, exc))

    # -- state changes and predicates, under the batcher's lock ------------------------------

    def _queued(self, ticket: Ticket) -> None:
        self._waiting.add(ticket)

    def _queued_by_reader(self, ticket: Ticket) -> None:
        # Nothing in flight: the client waits for each answer again.
        if not self._waiting and not self._answers and ticket.sample[self._input].nbytes <= _CALL_READS_UP_TO:
            self._reader_reads = False
            self._reader_wake.clear()
        self._waiting.add(ticket)

    def _done(self, tile_id: int, own_deadline: bool, ticket: Ticket, outcome: TileOutputs | TilecastError) -> None:
        self._waiting.discard(ticket)
        self._answers.append(_Answer(tile_id, outcome, own_deadline))

    def _has_room(self) -> bool:
        return len(self._waiting) < self._window or self._stopped

    def _over(self) -> bool:
        """The call ended, or every tile has been read and answered."""
        return self._stopped or (self._reading_done and not self._waiting)

    def _leaving(self) -> bool:
        """Nothing more to read, for either thread."""
        return self._stopped or self._reading_done or self._failure is not None

    def _call_reads(self) -> bool:
        """The call's thread is to read the next tile: its turn, and none of the stream's tiles in flight."""
        return not self._reader_reads and not self._waiting and not self._answers and not self._leaving()

    def _has_news(self) -> bool:
        return bool(self._answers) or self._failure is not None or self._over()

    def _has_news_or_turn(self) -> bool:
        return self._has_news() or self._call_reads()

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
