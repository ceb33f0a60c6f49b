"""Write results tile by tile into a tiled BigTIFF, under a temporary name until it is complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

COMPRESSIONS = ("none", "zlib", "zstd", "lzw", "jpeg")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block completes.

    An interrupted or failed write leaves no file under the final name (and removes its partial one).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_tiled_tiff(
    path: Path,
    tiles: Iterable[npt.NDArray[Any]],
    *,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    tile_size: int,
    compression: str = "zlib",
    description: str | None = None,
) -> None:
    """Write HWC tiles, given in row-major order of a `tile_size` grid, as a tiled BigTIFF.

    Edge tiles may be smaller than `tile_size`. Only one tile is held at a time.
    """
    import tifffile

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    height, width, channels = shape
    photometric = "rgb" if channels == 3 and dtype == np.uint8 else "minisblack"
    with atomic_output(path) as temporary:
        tifffile.imwrite(
            temporary,
            data=(t[:, :, 0] if channels == 1 else t for t in tiles),
            shape=(height, width, channels) if channels > 1 else (height, width),
            dtype=dtype,
            tile=(tile_size, tile_size),
            photometric=photometric,
            planarconfig="contig" if channels > 1 else None,
            compression=None if compression == "none" else compression,
            bigtiff=True,
            description=description,
            metadata=None,
        )
