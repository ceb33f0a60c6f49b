"""Pyramidal OME-TIFF output, built without holding any level in memory.

The converter first writes the full-resolution result as a tiled BigTIFF (the *staged* base, a scratch
file of this conversion). Each lower level is then made from the one above it, one output tile at a time
(2 x 2 mean for images, every other pixel for labels, so no label is invented), into scratch files of its
own. Finally the OME-TIFF is assembled: the base with its levels as SubIFDs, the physical pixel size and
channel names in the OME-XML. Only this conversion's own scratch files are read back, never an output.
Where the samples are stored interleaved (one channel, or RGB), compressed tiles are copied byte for byte;
other channel counts are written one plane per channel, as OME readers expect, which decodes the staged
tiles once per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from tilecast.client.metadata import PixelMetadata, resolution_tags
from tilecast.client.reader import TiffSource
from tilecast.client.tiling import Box, tile_boxes
from tilecast.client.writer import is_rgb, write_tiles

Array = npt.NDArray[Any]
OME_SUFFIXES = (".ome.tif", ".ome.tiff")


def is_ome_path(path: Path) -> bool:
    return path.name.lower().endswith(OME_SUFFIXES)


def level_shapes(height: int, width: int, tile_size: int) -> list[tuple[int, int]]:
    """(height, width) of every level: halved (rounding up) until the level fits in one tile."""
    shapes = [(height, width)]
    while max(shapes[-1]) > tile_size:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def downsample(region: Array, labels: bool) -> Array:
    """Halve an HWC region: 2 x 2 mean (rounded for integers), or the top-left pixel of each 2 x 2 for labels.
    An odd last row or column is averaged with itself."""
    if labels:
        return region[::2, ::2]
    h, w = region.shape[:2]
    padded = np.pad(region, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge").astype(np.float64)
    mean = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, -1).mean(axis=(1, 3))
    halved: Array = np.rint(mean) if np.issubdtype(region.dtype, np.integer) else mean
    return halved.astype(region.dtype)


def _halved_tiles(previous: TiffSource, shape: tuple[int, int], tile_size: int, labels: bool) -> Iterator[Array]:
    height, width = previous.shape[:2]
    for box in tile_boxes(*shape, tile_size):
        region = Box(2 * box.y0, min(2 * box.y1, height), 2 * box.x0, min(2 * box.x1, width))
        yield downsample(previous.read(region), labels)


def _raw_tiles(path: Path) -> Iterator[bytes]:
    """The compressed tiles of a staged level, in file order, without decoding them."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page: Any = tif.pages[0]
        for segment in tif.filehandle.read_segments(page.dataoffsets, page.databytecounts, sort=False):
            data, _ = cast(tuple[bytes | None, int], segment)  # flat=True: one (bytes, index) per tile
            assert data is not None  # every tile was written
            yield data


def _plane_tiles(path: Path, tile_size: int) -> Iterator[Array]:
    """Tiles of each channel in turn (planar storage), read from a staged interleaved level."""
    source = TiffSource(path)
    try:
        height, width, channels = source.shape
        for channel in range(channels):
            for box in tile_boxes(height, width, tile_size):
                yield source.read(box)[:, :, channel]
    finally:
        source.close()


def _ome_metadata(channels: int, interleaved: bool, metadata: PixelMetadata) -> dict[str, Any]:
    ome: dict[str, Any] = {"axes": ("YXS" if channels > 1 else "YX") if interleaved else "CYX"}
    if metadata.pixel_size_um is not None:
        ome.update(PhysicalSizeY=metadata.pixel_size_um[0], PhysicalSizeYUnit="µm",
                   PhysicalSizeX=metadata.pixel_size_um[1], PhysicalSizeXUnit="µm")
    if metadata.channel_names and ((len(metadata.channel_names) == channels and not interleaved) or channels == 1):
        ome["Channel"] = {"Name": list(metadata.channel_names[:channels])}
    return ome


def write_pyramid(staged: Path, target: Path, *, tile_size: int, compression: str, metadata: PixelMetadata,
                  scratch: Callable[[str], Path], labels: bool = False, software: str | None = None) -> None:
    """Turn a staged tiled BigTIFF (HWC) into a pyramidal OME-TIFF written at `target` (the caller's
    temporary); lower levels go to `scratch(kind)` paths, which the caller removes."""
    base = TiffSource(staged)
    height, width, channels = base.shape
    dtype = base.dtype
    base.close()
    shapes = level_shapes(height, width, tile_size)
    levels = [staged] + [scratch(f"level{i}") for i in range(1, len(shapes))]
    for i in range(1, len(shapes)):
        previous = TiffSource(levels[i - 1])
        try:
            write_tiles(levels[i], _halved_tiles(previous, shapes[i], tile_size, labels),
                        shape=(*shapes[i], channels), dtype=dtype, tile_size=tile_size, compression=compression)
        finally:
            previous.close()
    _assemble(target, levels, shapes, channels, dtype, tile_size, compression, metadata, software)


def _assemble(path: Path, levels: Sequence[Path], shapes: Sequence[tuple[int, int]], channels: int,
              dtype: np.dtype[Any], tile_size: int, compression: str, metadata: PixelMetadata,
              software: str | None) -> None:
    """The OME-TIFF: level 0 with the OME-XML, the staged lower levels as its SubIFDs."""
    import tifffile

    rgb = is_rgb(channels, dtype)
    interleaved = channels == 1 or rgb
    common: dict[str, Any] = {
        "dtype": dtype, "tile": (tile_size, tile_size), "photometric": "rgb" if rgb else "minisblack",
        "compression": None if compression == "none" else compression,
        "planarconfig": "contig" if channels > 1 and interleaved else None}
    height, width = shapes[0]
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for i, (level, (h, w)) in enumerate(zip(levels, shapes, strict=True)):
            data: Iterator[Any] = _raw_tiles(level) if interleaved else _plane_tiles(level, tile_size)
            shape = ((h, w, channels) if channels > 1 else (h, w)) if interleaved else (channels, h, w)
            first: dict[str, Any]
            if i == 0:
                first = {"subifds": len(shapes) - 1, "software": software or False,
                         "metadata": _ome_metadata(channels, interleaved, metadata)}
            else:
                first = {"subfiletype": 1, "metadata": None}
            tif.write(data, shape=shape, **common, **first, **resolution_tags(metadata.scaled(height / h, width / w)))
