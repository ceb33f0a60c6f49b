"""ConvertOptions checks every field when made; a window below 1 is refused wherever tiles are streamed
(0 used to wait forever for a slot)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tilecast.client.live import AsyncClient, LiveStream
from tilecast.client.options import ConvertOptions
from tilecast.client.remote import Client
from tilecast.proto.errors import InvalidArgument, InvalidOption

TILE = np.zeros((16, 16, 3), np.uint8)


@pytest.mark.parametrize("window", [0, -1])
def test_streaming_refuses_a_window_below_one(window: int) -> None:
    with Client("127.0.0.1:1") as client:  # nothing listens: the window is refused before any call
        with pytest.raises(InvalidArgument, match="--window"):
            next(client.stream("m", [(0, TILE)], window=window))
        with pytest.raises(InvalidOption, match="1 or more"):
            LiveStream(client, "m", window=window)
    with pytest.raises(InvalidOption, match="--window"):
        ConvertOptions(window=window)

    async def live() -> None:
        async with AsyncClient("127.0.0.1:1") as connected:
            connected.live("m", window=window)

    with pytest.raises(InvalidOption, match="--window"):
        asyncio.run(live())


@pytest.mark.parametrize(("fields", "words"), [
    ({"min_tissue": 2.0}, "--min-tissue 2: give a fraction between 0 and 1"),  # a typo for 0.2: all NaN before
    ({"min_tissue": float("nan")}, "--min-tissue nan"),
    ({"tile_size": 0, "halo": -5}, "--halo -5"),
    ({"stride": -32}, "--stride -32"),
    ({"overlap": -7, "stitch": "blend"}, "--overlap -7"),
    ({"channels": "grey"}, "or gray"),
    ({"channels": (0, -1)}, "--channels '0,-1'"),
    ({"microns_per_pixel": 0.0}, "--mpp 0"),
    ({"compression": "lzma"}, "use one of none, zlib"),
])
def test_each_bad_field_is_named_with_what_is_valid(fields: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        ConvertOptions(**fields)  # type: ignore[arg-type]
    assert words in str(refused.value)


def test_what_is_valid_is_accepted() -> None:
    assert ConvertOptions(channels="gray").channels == "gray"
    assert ConvertOptions(tile_size=0, halo=0, overlap=0, min_tissue=0.0, stride=0).min_tissue == 0.0
    assert ConvertOptions(min_tissue=1.0, window=1, microns_per_pixel=0.25).window == 1
