"""The stream runner under load and abuse: fair windows for streams that send ahead, idle streams ended,
a call limit that leaves health answering."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.conftest import RGB_MODEL, local_settings
from tilecast.client.remote import Client
from tilecast.server.app import ServerThread

STREAMS, SECONDS, WINDOW = 12, 6.0, 8


def test_streams_sending_ahead_each_get_their_window(model_repository: Path) -> None:
    """Every stream that keeps `WINDOW` tiles in flight gets a like share of the engine: none is judged to
    wait for each answer (and served one tile at a time) because reads are slow on a busy CPU."""
    tile = np.random.default_rng(50).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    start = threading.Barrier(STREAMS)

    def stream(client: Client) -> int:
        start.wait(timeout=60)
        until = time.monotonic() + SECONDS

        def source() -> Iterator[tuple[int, np.ndarray]]:
            i = 0
            while time.monotonic() < until:
                yield i, tile
                i += 1

        return sum(1 for _ in client.stream(RGB_MODEL, source(), window=WINDOW, timeout=120))

    with ServerThread(local_settings(model_repository, max_tiles_in_flight_per_stream=WINDOW)) as server, \
            Client(f"127.0.0.1:{server.port}") as client, ThreadPoolExecutor(STREAMS) as pool:
        counts = list(pool.map(stream, [client] * STREAMS))
    assert min(counts) >= 0.5 * max(counts), f"tiles answered per stream: {sorted(counts)}"
