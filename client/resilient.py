"""Streams that survive a server restart: tiles not yet answered are sent again, after a backoff."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from tilecast.client.remote import Array, Client, TileReply
from tilecast.proto.errors import DeadlineExceeded, Unavailable
from tilecast.proto.v1 import inference_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # restarts of the stream before giving up
    first_backoff_s: float = 0.5  # doubled after each failed attempt
    max_backoff_s: float = 8.0
    reconnect_timeout_s: float = 30.0  # how long to wait for the server to come back each time


def stream_with_retries(
    client: Client,
    model: str,
    tile_ids: Sequence[int],
    read_tile: Callable[[int], Array],
    *,
    version: int,
    window: int,
    policy: RetryPolicy | None = None,
    parameters: inference_pb2.ImageParameters | None = None,
    tile_deadline_ms: int = 0,
) -> Generator[TileReply, None, None]:
    """Yield a reply for every tile id, resending unanswered tiles when the server is UNAVAILABLE.

    Tiles are read again from the source on a resend (`read_tile`), so nothing beyond the window is
    held. The version is pinned, so a restarted server must still have it. A tile that misses its
    `tile_deadline_ms` is sent again at once in the same stream (so the caller's reorder buffer stays
    short), at most `policy.attempts` times.
    """
    policy = policy or RetryPolicy()
    answered: set[int] = set()
    misses: collections.Counter[int] = collections.Counter()
    failures = 0
    while True:
        remaining = [i for i in tile_ids if i not in answered]
        if not remaining:
            return
        resend: collections.deque[int] = collections.deque()

        def ids(order: list[int] = remaining, resend: collections.deque[int] = resend) -> Iterator[int]:
            for i in order:
                while resend:
                    yield resend.popleft()
                yield i
            while resend:  # tiles that miss after this point go to the next pass
                yield resend.popleft()

        replies = client.stream(model, ((i, read_tile(i)) for i in ids()), version=version, window=window,
                                parameters=parameters, tile_deadline_ms=tile_deadline_ms)
        replied: set[int] = set()
        try:
            for reply in replies:
                replied.add(reply.id)
                if reply.error is not None:
                    misses[reply.id] += 1
                    if misses[reply.id] > policy.attempts:
                        raise DeadlineExceeded(f"tile {reply.id} missed its {tile_deadline_ms} ms deadline "
                                               f"{misses[reply.id]} times: {reply.error}")
                    resend.append(reply.id)
                elif reply.id not in answered:
                    answered.add(reply.id)
                    failures = 0  # progress: the next outage gets the whole budget again
                    yield reply
            if any(i not in replied for i in remaining):  # counts against the retry budget, so never loops
                raise Unavailable("the server ended the stream early")
        except Unavailable as exc:
            failures += 1
            if failures > policy.attempts:
                raise Unavailable(f"{exc} (gave up after {policy.attempts} retries)") from exc
            backoff = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** (failures - 1))
            log.warning("server unavailable (%s); retrying %d tiles in %.1f s", exc, len(remaining), backoff)
            time.sleep(backoff)
            try:
                client.wait_ready(policy.reconnect_timeout_s)
            except Unavailable:
                continue  # counts as another failed attempt on the next pass
        finally:
            replies.close()
