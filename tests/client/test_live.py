"""Acquisition-style streaming: tiles sent one by one as they are 'acquired', results read as they finish."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import RGB_MODEL
from tilecast.client.live import AsyncClient, LiveStream
from tilecast.client.remote import Client
from tilecast.proto.errors import NotFound
from tilecast.server.app import ServerThread


def expected(model_repository: Path, tiles: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    return {i: session.run(None, {"image": t[None]})[0][0] for i, t in tiles.items()}


def acquired(count: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for i in range(count)}


def test_sync_live_stream_from_another_thread(server: ServerThread, model_repository: Path) -> None:
    tiles = acquired(20, seed=1)
    with Client(f"127.0.0.1:{server.port}") as client, LiveStream(client, RGB_MODEL, window=4) as live:
        def acquire() -> None:  # the microscope's thread
            for tile_id, tile in tiles.items():
                live.send(tile_id, tile, timeout=30)
            live.close()

        producer = threading.Thread(target=acquire)
        producer.start()
        replies = {r.id: r for r in live.results()}
        producer.join(timeout=30)
    truth = expected(model_repository, tiles)
    assert sorted(replies) == sorted(tiles)
    for tile_id, reply in replies.items():
        np.testing.assert_array_equal(reply.outputs[0], truth[tile_id])
        assert reply.latency_s > reply.compute_us / 1e6 > 0


def test_async_live_stream(server: ServerThread, model_repository: Path) -> None:
    tiles = acquired(12, seed=2)

    async def run() -> dict[int, np.ndarray]:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.wait_ready(30)
            assert (await client.get_model(RGB_MODEL)).name == RGB_MODEL
            with pytest.raises(NotFound, match="not found"):  # the server's status, as the blocking client's
                await client.get_model("no-such-model")
            async with client.live(RGB_MODEL, window=3) as live:
                async def acquire() -> None:
                    for tile_id, tile in tiles.items():
                        await live.send(tile_id, tile)
                    await live.close()

                producer = asyncio.create_task(acquire())
                got = {r.id: r.outputs[0] async for r in live.results()}
                await producer
                return got

    got = asyncio.run(run())
    truth = expected(model_repository, tiles)
    assert sorted(got) == sorted(tiles)
    for tile_id, output in got.items():
        np.testing.assert_array_equal(output, truth[tile_id])
