"""Streams that survive a server restart: tiles not yet answered are sent again, after a backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from tilecast.client.remote import Array, Client, TileReply
from tilecast.proto.errors import Unavailable
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
) -> Generator[TileReply, None, None]:
    """Yield a reply for every tile id, resending unanswered tiles when the server is UNAVAILABLE.

    Tiles are read again from the source on a resend (`read_tile`), so nothing beyond the window is
    held. The version is pinned, so a restarted server must still have it.
    """
    policy = policy or RetryPolicy()
    answered: set[int] = set()
    failures = 0
    while True:
        remaining = [i for i in tile_ids if i not in answered]
        if not remaining:
            return
        replies = client.stream(model, ((i, read_tile(i)) for i in remaining), version=version, window=window,
                                parameters=parameters)
        try:
            for reply in replies:
                if reply.id not in answered:
                    answered.add(reply.id)
                    failures = 0  # progress: the next outage gets the whole budget again
                    yield reply
            if len(answered) < len(tile_ids):
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
