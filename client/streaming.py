"""Step 3 of a conversion, stream: the plan's tiles read ahead on a few threads (decoding releases the
GIL), sent through the resilient stream, and handed on in the plan's order.

Memory stays bounded by the tiles in flight: the read-ahead holds at most `depth` decoded tiles, the
stream's window bounds the tiles sent, and the reorder buffer holds only early arrivals of that window.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from tilecast.client.plan import TilePlan
from tilecast.client.remote import Array, Client, TileReply
from tilecast.client.resilient import RetryPolicy, stream_with_retries
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2

Progress = Callable[[int, int], None]  # (tiles done, tiles total)
READ_WORKERS = max(2, min(8, os.cpu_count() or 2))


class ReadAhead:
    """`read(i)` for tile ids asked in (mostly) `order`: the next `depth` ids are decoded on worker threads
    before they are asked for. An id asked out of order (a resend) is read at once."""

    def __init__(self, read: Callable[[int], Array], order: Sequence[int], depth: int,
                 workers: int = READ_WORKERS) -> None:
        self._read, self._order, self._depth = read, order, max(1, depth)
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="tile-read")
        self._pending: dict[int, Future[Array]] = {}
        self._next = 0  # position in `order` of the next id to start
        self._lock = threading.Lock()  # a stream restarted after an outage may overlap the old one briefly

    def __call__(self, index: int) -> Array:
        with self._lock:
            self._fill()
            future = self._pending.pop(index, None)
        tile = future.result() if future is not None else self._read(index)
        with self._lock:
            self._fill()
        return tile

    def _fill(self) -> None:
        while len(self._pending) < self._depth and self._next < len(self._order):
            index = self._order[self._next]
            self._next += 1
            self._pending[index] = self._pool.submit(self._read, index)

    @property
    def held(self) -> int:
        """Tiles read (or being read) ahead and not yet asked for."""
        return len(self._pending)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


@dataclass(frozen=True)
class StreamSettings:
    window: int
    retry: RetryPolicy
    tile_deadline_ms: int = 0


def in_order(replies: Iterator[TileReply], plan: TilePlan,
             progress: Progress | None) -> Iterator[tuple[int, list[Array]]]:
    """Each tile's outputs in the plan's order, holding early arrivals in a reorder buffer (bounded by the
    window); each output must have the size of what the tile showed the model."""
    waiting: dict[int, list[Array]] = {}
    ids = plan.ids
    for done, index in enumerate(ids, start=1):
        while index not in waiting:
            try:
                reply = next(replies)
            except StopIteration:
                raise InvalidArgument(f"the server ended the stream before tile {index}") from None
            waiting[reply.id] = reply.outputs
        outputs = waiting.pop(index)
        box = plan.source(index)
        if plan.pixel_outputs and any(o.shape[:2] != (box.height, box.width) for o in outputs):
            raise InvalidArgument(f"tile {index}: model returned {outputs[0].shape[:2]}, "
                                  f"expected {(box.height, box.width)}")
        if progress:
            progress(done, len(ids))
        yield index, outputs


def stream_plan(client: Client, spec: ModelSpec, plan: TilePlan, read_tile: Callable[[int], Array],
                settings: StreamSettings, parameters: inference_pb2.ImageParameters | None,
                progress: Progress | None = None) -> Generator[tuple[int, list[Array]], None, None]:
    """Every tile of `plan` through the model, as (id, outputs) in plan order. Close the generator to cancel
    the stream (a failing writer does)."""
    ahead = ReadAhead(read_tile, plan.ids, depth=2 * READ_WORKERS)
    replies = stream_with_retries(client, spec.name, plan.ids, ahead, version=spec.version,
                                  window=settings.window, policy=settings.retry, parameters=parameters,
                                  tile_deadline_ms=settings.tile_deadline_ms)
    try:
        yield from in_order(replies, plan, progress)
    finally:
        replies.close()
        ahead.close()
