"""Streams that survive a server restart: tiles not yet answered are sent again, after a backoff."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field

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


@dataclass
class _Tally:
    """What every pass of one image's stream shares: the tiles answered, deadline misses, outages in a row."""

    answered: set[int] = field(default_factory=set)
    misses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: int = 0


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
    tally = _Tally()
    while True:
        remaining = [i for i in tile_ids if i not in tally.answered]
        if not remaining:
            return
        resend: collections.deque[int] = collections.deque()
        tiles = ((i, read_tile(i)) for i in _with_resends(remaining, resend))
        replies = client.stream(model, tiles, version=version, window=window, parameters=parameters,
                                tile_deadline_ms=tile_deadline_ms)
        try:
            yield from _one_pass(replies, remaining, resend, tally, policy, tile_deadline_ms)
        except Unavailable as exc:
            _back_off(client, exc, tally, policy, len(remaining))
        finally:
            replies.close()


def _with_resends(order: list[int], resend: collections.deque[int]) -> Iterator[int]:
    """The ids of one pass, with ids to send again slipped in as soon as they are known."""
    for i in order:
        while resend:
            yield resend.popleft()
        yield i
    while resend:  # tiles that miss after this point go to the next pass
        yield resend.popleft()


def _one_pass(replies: Iterator[TileReply], remaining: list[int], resend: collections.deque[int], tally: _Tally,
              policy: RetryPolicy, tile_deadline_ms: int) -> Iterator[TileReply]:
    """First answers of one stream; a tile that missed its deadline is queued to be sent again."""
    replied: set[int] = set()
    for reply in replies:
        replied.add(reply.id)
        if reply.error is not None:
            tally.misses[reply.id] += 1
            if tally.misses[reply.id] > policy.attempts:
                raise DeadlineExceeded(f"tile {reply.id} missed its {tile_deadline_ms} ms deadline "
                                       f"{tally.misses[reply.id]} times: {reply.error}")
            resend.append(reply.id)
        elif reply.id not in tally.answered:
            tally.answered.add(reply.id)
            tally.failures = 0  # progress: the next outage gets the whole budget again
            yield reply
    if any(i not in replied for i in remaining):  # counts against the retry budget, so never loops
        raise Unavailable("the server ended the stream early")


def _back_off(client: Client, exc: Unavailable, tally: _Tally, policy: RetryPolicy, remaining: int) -> None:
    """After an outage: give up past the budget, else wait (doubling) and for the server to be back."""
    tally.failures += 1
    if tally.failures > policy.attempts:
        raise Unavailable(f"{exc} (gave up after {policy.attempts} retries)") from exc
    backoff = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** (tally.failures - 1))
    log.warning("server unavailable (%s); retrying %d tiles in %.1f s", exc, remaining, backoff)
    time.sleep(backoff)
    with contextlib.suppress(Unavailable):  # still down: counts as another failed attempt on the next pass
        client.wait_ready(policy.reconnect_timeout_s)
