"""Step 1 of a conversion, open: one input file opened once, holding its lazy pixels at the chosen level,
what it says about them (pixel size, channel names) and cheap whole-image overviews.

A TIFF is opened as one tifffile.TiffFile; the level read, its metadata and the coarser level an overview
comes from are all read through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy.typing as npt

from tilecast.client.metadata import PixelMetadata, nearest_level, tiff_metadata
from tilecast.client.overview import coarse_level, subsample
from tilecast.client.reader import (
    PILLOW_SUFFIXES,
    ImageReadError,
    ImageSource,
    PillowSource,
    TiffSource,
    is_tiff_path,
    open_tiff,
)

Array = npt.NDArray[Any]
OVERVIEW_MIN_EDGE = 1024  # an overview level's shorter edge is at least this (or the level read)


@dataclass(frozen=True)
class FileIdentity:
    """What tells one input file from another, or from itself after a change: resolved path, size, mtime."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        status = path.stat()
        return cls(str(path.resolve()), status.st_size, status.st_mtime_ns)


@dataclass
class OpenedImage:
    """An input image, opened once for the whole conversion (close it, or use it as a context manager)."""

    path: Path
    level: int
    source: ImageSource  # the pixels of `level`, read lazily
    metadata: PixelMetadata
    tif: Any = None  # the tifffile.TiffFile of a TIFF, else None
    _views: dict[int, Array] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.source.shape

    def overview(self, max_edge: int = 2048) -> Array:
        """A subsampled HWC view of the whole image (from a coarser pyramid level when there is one),
        longer edge at most `max_edge`; kept, as percentiles and tissue masks may both ask for it."""
        if max_edge not in self._views:
            self._views[max_edge] = subsample(self._overview_source(max_edge), max_edge)
        return self._views[max_edge]

    def _overview_source(self, max_edge: int) -> ImageSource:
        if self.tif is None:
            return self.source
        level = coarse_level(self.tif, self.level, min(max_edge, OVERVIEW_MIN_EDGE))
        return self.source if level == self.level else TiffSource(self.path, level, tif=self.tif)

    def close(self) -> None:
        self.source.close()
        if self.tif is not None:
            self.tif.close()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_input(path: Path, level: int = 0, microns_per_pixel: float | None = None) -> OpenedImage:
    """Open `path` once: the level asked for (or the one nearest `microns_per_pixel`), its metadata, and
    what its overviews are read from. Raises ImageReadError saying why a file cannot be read."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    name = path.name.lower()
    if any(name.endswith(s) for s in PILLOW_SUFFIXES):
        if microns_per_pixel is not None:
            nearest_level(None, path, microns_per_pixel)  # raises: such files do not record a pixel size
        return OpenedImage(path, level, PillowSource(path), PixelMetadata())
    if not is_tiff_path(path):
        raise ImageReadError(f"{path}: unsupported file type; use TIFF/BigTIFF/OME-TIFF/SVS, PNG or JPEG")
    tif = open_tiff(path)
    try:
        if microns_per_pixel is not None:
            level = nearest_level(tif, path, microns_per_pixel)
        source = TiffSource(path, level, tif=tif)
        return OpenedImage(path, level, source, tiff_metadata(tif, path, level), tif)
    except BaseException:
        tif.close()
        raise

