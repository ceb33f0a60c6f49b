"""The tilecast.v1.Inference servicer: protobuf in, NumPy to the batchers, protobuf out.

Handlers run in the gRPC server's thread pool, one thread per call, and wait on the batchers, which
lets the thread that will send a result compute it too (`tilecast.server.batching`). Typed errors
become gRPC status codes at the boundary (`tilecast.server.boundary`); a stream's tiles are read,
computed and answered by the stream runner (`tilecast.server.streams`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TypeAlias

from tilecast.proto import wire
from tilecast.proto.errors import DeadlineExceeded, InvalidArgument
from tilecast.proto.tile_reader import PredictView, TileView
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.backends.base import Array
from tilecast.server.batching import TileOutputs
from tilecast.server.boundary import CallRecord, Context, RequestCounter, stream_errors, unary_errors
from tilecast.server.metrics import Metrics
from tilecast.server.models import ModelManager, Served
from tilecast.server.settings import Settings
from tilecast.server.streams import IdleWatch, Job, Leases, StreamRunner, stacked
from tilecast.server.validation import parameter_feeds

log = logging.getLogger(__name__)

# Tiles come in as views of the received bytes (`tilecast.proto.tile_reader`: a stream's tiles, a
# unary request), results go out pre-encoded (`tilecast.proto.wire`); other messages as the generated classes.
StreamRequest: TypeAlias = TileView | inference_pb2.StreamPredictRequest
StreamReply: TypeAlias = bytes | inference_pb2.StreamPredictResponse
__all__ = ["CallRecord", "Context", "InferenceServicer", "RequestCounter", "deadline_of", "run_batch",
           "stream_errors", "unary_errors"]


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
    return stacked(results), max(results, key=lambda r: r.queue_seconds + r.compute_seconds)


def _timing(result: TileOutputs) -> wire.Timing:
    return int(result.queue_seconds * 1e6), int(result.compute_seconds * 1e6), result.batch_size


class InferenceServicer(RequestCounter, inference_pb2_grpc.InferenceServicer):
    def __init__(self, models: ModelManager, metrics: Metrics, settings: Settings, idle: IdleWatch) -> None:
        """`idle` ends the streams that send nothing for too long."""
        self._models = models
        self._idle = idle
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
        tiles = _TileMessages(self._models, record, deadline_of(context))
        try:
            yield from StreamRunner(tiles.accept, self._settings.max_tiles_in_flight_per_stream, context,
                                    self._idle, "stream-reader").run(requests)
        finally:
            tiles.leases.close()


class _TileMessages:
    """StreamPredict's messages for the stream runner: a header naming the model, then tiles, each
    answered by id. A tile whose own budget runs out is answered with its error and the stream goes on;
    any other error (a bad tile, a full queue) fails the stream."""

    def __init__(self, models: ModelManager, record: CallRecord, deadline: float | None) -> None:
        self.leases = Leases(models)
        self._record = record
        self._deadline = deadline
        self._served: Served | None = None
        self._extra: dict[str, Array] = {}
        self._input = ""

    def accept(self, request: StreamRequest) -> Job | None:
        if self._served is None:
            self._header(request)
            return None
        if isinstance(request, TileView):
            message = request
        elif request.WhichOneof("item") == "tile":
            message = TileView.of(request.tile)
        else:
            raise InvalidArgument("a stream carries one header, then only tiles")
        served = self._served
        try:
            tile = served.check.view(message.dtype, message.shape, message.data, batched=False)
        except InvalidArgument as exc:
            raise InvalidArgument(f"tile {message.id}: {exc}") from exc
        deadline, budget_ms = self._deadline, message.deadline_ms
        if budget_ms:
            own = time.monotonic() + budget_ms / 1000
            deadline = own if deadline is None else min(deadline, own)
        return Job([{self._input: tile, **self._extra}], served.batcher, self._answer, deadline, tile.nbytes,
                   (message.id, bool(budget_ms)))

    def _header(self, request: StreamRequest) -> None:
        if isinstance(request, TileView) or request.WhichOneof("item") != "header":
            raise InvalidArgument("the first message of a stream must be a header naming the model")
        header = request.header
        self._record.model = header.model
        served = self.leases.hold(header.model, header.version)
        self._extra = parameter_feeds(served.spec, header.parameters)
        self._input = served.check.input_name
        self._served = served

    def _answer(self, job: Job) -> StreamReply:
        tile_id, own_deadline = job.tag
        version = self._served.entry.version  # type: ignore[union-attr]  # set by the header
        if job.error is None:
            outcome = job.outcomes[0]
            assert outcome is not None  # a settled job without error has every outcome
            return wire.stream_result(tile_id, outcome.outputs, _timing(outcome), version)
        if isinstance(job.error, DeadlineExceeded) and own_deadline:  # this tile's budget ran out: answer, go on
            message = inference_pb2.TileResult(id=tile_id, code=job.error.code.value[0], message=str(job.error))
            return inference_pb2.StreamPredictResponse(result=message, version=version)
        raise job.error
