"""Write results tile by tile into tiled BigTIFFs, under temporary names until every output is complete.

Tiles are compressed on several threads (zlib, zstd and kin release the GIL), and each output is written
by a thread of its own fed through a short queue, so the stream and the stitching go on meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

COMPRESSIONS = ("none", "zlib", "zstd", "lzw", "jpeg")
SELF_ENCODED = ("zlib", "zstd", "lzw")  # encoded here; tifffile encodes jpeg (it needs the colour space)
ENCODE_WORKERS = max(2, min(8, os.cpu_count() or 2))
QUEUED_TILES = 8  # per output: what the writer may lag behind the stitching
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:partial|base|level\d+)-(?P<pid>\d+)(?:\.tif)?$")  # also older runs' names


def temporary_name(path: Path, kind: str = "partial") -> Path:
    """Where `path` is written before it is complete: hidden, beside it, tagged with this process."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove temporaries of `path` left by earlier runs that were killed (their process is gone)."""
    removed = []
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*-*") if path.parent.is_dir() else ():
        match = TEMPORARY.match(candidate.name)
        if match and match["name"] == path.name and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


class Staging:
    """The outputs of one conversion, each written under a temporary name; `commit` renames them all into
    place, `discard` removes every temporary. Outputs appear together or not at all."""

    def __init__(self) -> None:
        self._paths: list[tuple[Path, Path]] = []  # (temporary, final)
        self._scratch: list[Path] = []  # intermediate files, removed either way

    def temporary(self, final: Path, kind: str = "partial") -> Path:
        """A temporary name for `final` (stale ones of killed runs are removed first)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final)
        temporary = temporary_name(final, kind)
        self._paths.append((temporary, final))
        return temporary

    def scratch(self, final: Path, kind: str) -> Path:
        """A temporary for an intermediate file of `final` (a staged pyramid level, say), never committed."""
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = temporary_name(final, kind)
        self._scratch.append(scratch)
        return scratch

    def commit(self) -> None:
        done: list[Path] = []
        try:
            for temporary, final in self._paths:
                os.replace(temporary, final)
                done.append(final)
        except BaseException:
            for final in done:  # all or none, even if a rename fails part-way
                final.unlink(missing_ok=True)
            raise
        self._paths.clear()

    def discard(self) -> None:
        for temporary in [t for t, _ in self._paths] + self._scratch:
            temporary.unlink(missing_ok=True)
        self._paths.clear()
        self._scratch.clear()


@contextlib.contextmanager
def staged() -> Iterator[Staging]:
    """A Staging committed if the block completes, discarded (temporaries removed) if it fails."""
    staging = Staging()
    try:
        yield staging
        staging.commit()
    finally:
        staging.discard()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block completes."""
    with staged() as staging:
        yield staging.temporary(path)


def is_rgb(channels: int, dtype: np.dtype[Any]) -> bool:
    """Outputs stored (and shown by viewers) as RGB colour images."""
    return channels == 3 and dtype == np.uint8


def _encoder(compression: str, tile_shape: tuple[int, int, int], dtype: np.dtype[Any]) -> Callable[[Any], bytes]:
    """Compresses one HWC tile (edge tiles padded to the full tile, as TIFF stores them) into its TIFF
    segment, with tifffile's codec for that compression (libdeflate for zlib)."""
    import tifffile

    names = {"zlib": "ADOBE_DEFLATE", "zstd": "ZSTD", "lzw": "LZW"}
    codec = tifffile.TIFF.COMPRESSORS[tifffile.COMPRESSION[names[compression]]]

    def encode(tile: npt.NDArray[Any]) -> bytes:
        if tile.shape != tile_shape:
            padded = np.zeros(tile_shape, dtype)
            padded[: tile.shape[0], : tile.shape[1]] = tile
            tile = padded
        return bytes(codec(np.ascontiguousarray(tile, dtype)))

    return encode


def encoded(tiles: Iterable[npt.NDArray[Any]], encode: Callable[[Any], bytes],
            workers: int = ENCODE_WORKERS) -> Iterator[bytes]:
    """Tiles compressed on `workers` threads, in order; at most 2 x workers are held at once."""
    with ThreadPoolExecutor(workers, thread_name_prefix="tile-encode") as pool:
        pending: collections.deque[Future[bytes]] = collections.deque()
        for tile in tiles:
            pending.append(pool.submit(encode, tile))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def write_tiles(path: Path, tiles: Iterable[npt.NDArray[Any]], *, shape: tuple[int, int, int],
                dtype: np.dtype[Any], tile_size: int, compression: str = "zlib", description: str | None = None,
                tags: dict[str, Any] | None = None) -> None:
    """Write HWC tiles, given in row-major order of a `tile_size` grid, as a tiled BigTIFF at `path`.

    Edge tiles may be smaller than `tile_size`. A few tiles are compressed at once, on ENCODE_WORKERS
    threads; no more are held. `tags` are further tifffile.imwrite arguments (resolution, say).
    """
    import tifffile

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    height, width, channels = shape
    data: Iterator[Any] = (t[:, :, 0] if channels == 1 else t for t in tiles)
    if compression in SELF_ENCODED:
        data = encoded(tiles, _encoder(compression, (tile_size, tile_size, channels), np.dtype(dtype)))
    tile_bytes = tile_size * tile_size * channels * np.dtype(dtype).itemsize
    tifffile.imwrite(
        path,
        data=data,
        shape=(height, width, channels) if channels > 1 else (height, width),
        dtype=dtype,
        tile=(tile_size, tile_size),
        photometric="rgb" if is_rgb(channels, dtype) else "minisblack",
        planarconfig="contig" if channels > 1 else None,
        compression=None if compression == "none" else compression,
        maxworkers=ENCODE_WORKERS,
        buffersize=ENCODE_WORKERS * tile_bytes,  # batches of ENCODE_WORKERS tiles, not 512 MB of them
        bigtiff=True,
        description=description,
        metadata=None,
        **(tags or {}),
    )


def write_tiled_tiff(path: Path, tiles: Iterable[npt.NDArray[Any]], *, shape: tuple[int, int, int],
                     dtype: np.dtype[Any], tile_size: int, compression: str = "zlib",
                     description: str | None = None, tags: dict[str, Any] | None = None) -> None:
    """`write_tiles` under a temporary name, renamed to `path` once complete."""
    with atomic_output(path) as temporary:
        write_tiles(temporary, tiles, shape=shape, dtype=dtype, tile_size=tile_size, compression=compression,
                    description=description, tags=tags)


_END, _ABORT = object(), object()


class _Feed:
    """Tiles handed to a writer thread through a short queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_TILES)
        self.finished = False  # the writer has taken the last item

    def tiles(self) -> Iterator[npt.NDArray[Any]]:
        while True:
            item = self.queue.get()
            if item is _END or item is _ABORT:
                self.finished = True
                if item is _ABORT:  # the producer failed: this output must not look complete
                    raise RuntimeError("writing stopped")
                return
            yield item

    def drain(self) -> None:
        """After a failed write, keep the producer from blocking on a full queue."""
        while not self.finished:
            item = self.queue.get()
            self.finished = item is _END or item is _ABORT


def write_tiled_tiffs(targets: Sequence[tuple[Path, tuple[int, int, int], np.dtype[Any]]],
                      tiles: Iterable[Sequence[npt.NDArray[Any]]], *, tile_size: int, compression: str = "zlib",
                      description: str | None = None, tags: dict[str, Any] | None = None) -> None:
    """Several outputs of the same grid at once (labels and probabilities, say) at the given paths (the
    caller stages them): each tile is a sequence with one array per target, each target written by a thread
    of its own. Raises the first error; the caller discards the files then."""
    feeds = [_Feed() for _ in targets]
    errors: list[BaseException] = []

    def write(feed: _Feed, path: Path, shape: tuple[int, int, int], dtype: np.dtype[Any]) -> None:
        try:
            write_tiles(path, feed.tiles(), shape=shape, dtype=dtype, tile_size=tile_size,
                        compression=compression, description=description, tags=tags)
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)
            feed.drain()

    threads = [threading.Thread(target=write, args=(feed, *target), daemon=True, name="tiff-write")
               for feed, target in zip(feeds, targets, strict=True)]
    for thread in threads:
        thread.start()
    finish = _ABORT
    try:
        for arrays in tiles:
            if errors:
                break
            for feed, array in zip(feeds, arrays, strict=True):
                feed.queue.put(array)
        else:
            finish = _END
    finally:
        for feed in feeds:
            feed.queue.put(finish)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
