"""Write results tile by tile into a tiled BigTIFF, under a temporary name until it is complete."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
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


def is_rgb(channels: int, dtype: np.dtype[Any]) -> bool:
    """Outputs stored (and shown by viewers) as RGB colour images."""
    return channels == 3 and dtype == np.uint8


def write_tiled_tiff(
    path: Path,
    tiles: Iterable[npt.NDArray[Any]],
    *,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    tile_size: int,
    compression: str = "zlib",
    description: str | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """Write HWC tiles, given in row-major order of a `tile_size` grid, as a tiled BigTIFF.

    Edge tiles may be smaller than `tile_size`. Only one tile is held at a time. `tags` are further
    tifffile.imwrite arguments (resolution, say).
    """
    import tifffile

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    height, width, channels = shape
    photometric = "rgb" if is_rgb(channels, dtype) else "minisblack"
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
            **(tags or {}),
        )


_END, _ABORT = object(), object()


def write_tiled_tiffs(
    targets: Sequence[tuple[Path, tuple[int, int, int], np.dtype[Any]]],
    tiles: Iterable[Sequence[npt.NDArray[Any]]],
    *,
    tile_size: int,
    compression: str = "zlib",
    description: str | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """Several outputs of the same grid at once (labels and probabilities, say): each tile is a sequence
    with one array per target. One writer thread per extra target, fed through a short queue."""
    if len(targets) == 1:
        path, shape, dtype = targets[0]
        write_tiled_tiff(path, (t[0] for t in tiles), shape=shape, dtype=dtype, tile_size=tile_size,
                         compression=compression, description=description, tags=tags)
        return
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=4) for _ in targets[1:]]
    errors: list[BaseException] = []
    finished = [False] * len(queues)  # whether each writer has taken its queue's last item

    def drain(index: int) -> Iterator[npt.NDArray[Any]]:
        while True:
            item = queues[index].get()
            if item is _END or item is _ABORT:
                finished[index] = True
                if item is _ABORT:  # the main output failed: this one must not appear complete
                    raise RuntimeError("writing stopped")
                return
            yield item

    def write(index: int) -> None:
        path, shape, dtype = targets[index + 1]
        try:
            write_tiled_tiff(path, drain(index), shape=shape, dtype=dtype, tile_size=tile_size,
                             compression=compression, description=description, tags=tags)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            while not finished[index]:  # keep the producer from blocking on a full queue
                item = queues[index].get()
                finished[index] = item is _END or item is _ABORT

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(len(queues))]
    for thread in threads:
        thread.start()

    def first_and_fan_out() -> Iterator[npt.NDArray[Any]]:
        finish = _ABORT
        try:
            for arrays in tiles:
                for q, array in zip(queues, arrays[1:], strict=True):
                    q.put(array)
                yield arrays[0]
            finish = _END
        finally:
            for q in queues:
                q.put(finish)

    path, shape, dtype = targets[0]
    try:
        write_tiled_tiff(path, first_and_fan_out(), shape=shape, dtype=dtype, tile_size=tile_size,
                         compression=compression, description=description, tags=tags)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        path.unlink(missing_ok=True)  # all outputs or none
        raise errors[0]
