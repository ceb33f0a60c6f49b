"""Open images lazily and read regions as HWC arrays.

TIFF-based files (TIFF, BigTIFF, OME-TIFF, SVS) are read through tifffile's zarr store, one region
at a time; the whole image is never held in memory. PNG and JPEG have no tiles, so Pillow decodes
them whole (they are small by nature of the format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tilecast.client.chunks import ChunkCache
from tilecast.client.tiling import Box, reflect_indices
from tilecast.proto.errors import InvalidArgument

Array = npt.NDArray[Any]
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8", ".svs", ".ome.tif", ".ome.tiff", ".ndpi", ".scn"}
PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg"}


class ImageReadError(InvalidArgument):
    """The file cannot be read as an image: missing, corrupt, or a layout we cannot feed a model."""


class ImageSource(Protocol):
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]: ...  # height, width, channels

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def read(self, box: Box) -> Array:
        """Pixels inside the image, HWC."""
        ...

    def close(self) -> None: ...


def _hwc_permutation(axes: str, path: Path) -> tuple[int, ...]:
    """Axis order that puts Y and X first; every other axis (S samples, C channels, Z planes, T times)
    follows and is folded into the channel axis in file order, so planes can be fed as model channels."""
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"{path}: image axes {axes!r} have no Y and X; this is not a 2-D image")
    y, x = axes.index("Y"), axes.index("X")
    return (y, x, *(i for i in range(len(axes)) if i not in (y, x)))


def open_tiff(path: Path) -> Any:
    """The file's tifffile.TiffFile, or ImageReadError saying why it is not a TIFF."""
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ImageReadError(f"{path}: not a readable TIFF ({exc})") from exc


class TileDecoder:
    """Decodes one stored tile of a plain tiled level (one page, Y X and maybe samples, interleaved) straight
    from the file: several threads can decode at once, as the codecs release the GIL (zarr's store
    serialises them, and costs several times the decode itself)."""

    def __init__(self, tif: Any, page: Any, samples: bool) -> None:
        self._fh, self._page, self._samples = tif.filehandle, page, samples
        self._fh.set_lock(True)  # reads from several threads: seek + read must not interleave
        self._across = -(-int(page.imagewidth) // int(page.tilewidth))

    @classmethod
    def of(cls, tif: Any, level: Any, chunks: tuple[int, ...]) -> TileDecoder | None:
        """A decoder for `level` (a tifffile series level), or None where zarr's general reader is needed."""
        import tifffile

        page = level.pages[0] if len(level.pages) == 1 else None
        if not isinstance(page, tifffile.TiffPage) or not page.is_tiled or page.axes not in ("YX", "YXS"):
            return None
        samples = page.axes == "YXS"
        if samples and page.planarconfig != tifffile.PLANARCONFIG.CONTIG:
            return None
        if chunks != (page.tilelength, page.tilewidth, *((page.samplesperpixel,) if samples else ())):
            return None
        return cls(tif, page, samples)

    def __call__(self, rows: slice, cols: slice) -> Array:
        page = self._page
        index = (rows.start // page.tilelength) * self._across + cols.start // page.tilewidth
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        data = None
        if count:
            with self._fh.lock:
                self._fh.seek(offset)
                data = self._fh.read(count)
        tile = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[0]
        tile = tile[0, : rows.stop - rows.start, : cols.stop - cols.start]  # edge tiles are stored whole
        return np.asarray(tile if self._samples else tile[..., 0])


class TiffSource:
    """One pyramid level of a TIFF. Given an open `tif`, it reads through that (and leaves closing it to
    its owner), so one file serves the image, its metadata and its overview levels."""

    def __init__(self, path: Path, level: int = 0, tif: Any = None) -> None:
        import zarr

        self.path = path
        self._owns = tif is None
        self._tif = open_tiff(path) if tif is None else tif
        try:
            series = self._tif.series[0]
            if not 0 <= level < len(series.levels):
                raise ImageReadError(f"{path}: level {level} does not exist; it has {len(series.levels)}")
            page = series.levels[level]
            self._perm = _hwc_permutation(page.axes, path)
            # The series' store at a level: a level's own store is a group when the series has several.
            self._array = zarr.open_array(series.aszarr(level=level), mode="r")
            self._direct = TileDecoder.of(self._tif, series.levels[level], tuple(self._array.chunks))
            self._chunks = ChunkCache(self._direct or self._read_array, tuple(self._array.shape),
                                      tuple(self._array.chunks), self._perm[0], self._perm[1])
            shape = [int(page.shape[i]) for i in self._perm]
            self._shape = (shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64)))
            self._dtype: np.dtype[Any] = np.dtype(page.dtype)
        except ImageReadError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many types for broken structures
            self.close()
            raise ImageReadError(f"{path}: cannot read the image structure ({exc})") from exc

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    def read(self, box: Box) -> Array:
        pixel_bytes = self._shape[2] * self._dtype.itemsize
        try:
            keep = box.height > 0 and box.width > 0 and self._chunks.worth_caching(
                box.y0, box.y1, box.x0, box.x1, pixel_bytes)
            if keep or (self._direct is not None and box.height > 0 and box.width > 0):
                region = self._chunks.read(box.y0, box.y1, box.x0, box.x1, keep=keep)
            else:
                region = self._read_array(slice(box.y0, box.y1), slice(box.x0, box.x1))
        except Exception as exc:  # a truncated or corrupt strip or tile
            raise ImageReadError(f"{self.path}: cannot decode the region {box} ({exc})") from exc
        region = region.transpose(self._perm)
        return region.reshape(region.shape[0], region.shape[1], -1)

    def _read_array(self, rows: slice, cols: slice) -> Array:
        index: list[slice] = [slice(None)] * len(self._perm)
        index[self._perm[0]], index[self._perm[1]] = rows, cols
        return np.asarray(self._array[tuple(index)])

    @property
    def tif(self) -> Any:
        """The open tifffile.TiffFile this level is read through."""
        return self._tif

    @property
    def chunks_decoded(self) -> int:
        return self._chunks.decoded

    def close(self) -> None:
        if self._owns:
            self._tif.close()


class PillowSource:
    def __init__(self, path: Path) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = path
        try:
            with Image.open(path) as image:
                data = np.asarray(image.convert("RGB") if image.mode == "P" else image)
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
        self._data = data if data.ndim == 3 else data[:, :, None]

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w, c = self._data.shape
        return int(h), int(w), int(c)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    def read(self, box: Box) -> Array:
        return self._data[box.y0:box.y1, box.x0:box.x1]

    def close(self) -> None:
        pass


def is_tiff_path(path: Path) -> bool:
    """Whether the name says TIFF-based (TIFF, BigTIFF, OME-TIFF, SVS and kin)."""
    return any(path.name.lower().endswith(s) for s in TIFF_SUFFIXES)


def open_image(path: Path, level: int = 0) -> ImageSource:
    """Open an image for lazy regional reads; raises ImageReadError with the reason when it can't."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    name = path.name.lower()
    if any(name.endswith(s) for s in PILLOW_SUFFIXES):
        return PillowSource(path)
    if is_tiff_path(path):
        return TiffSource(path, level)
    raise ImageReadError(
        f"{path}: unsupported file type; use TIFF/BigTIFF/OME-TIFF/SVS, PNG or JPEG"
    )


def image_shape(path: Path, level: int = 0) -> tuple[int, int, int]:
    """(height, width, channels) from the file's header alone: nothing is decoded."""
    if any(path.name.lower().endswith(s) for s in PILLOW_SUFFIXES) and path.is_file():
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:  # lazy: reads the header only
                width, height = image.size
                return height, width, len(image.getbands()) if image.mode != "P" else 3
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    source = open_image(path, level)  # TIFFs are opened lazily anyway
    try:
        return source.shape
    finally:
        source.close()


def read_reflected(source: ImageSource, box: Box) -> Array:
    """Pixels of a box that may reach past the image's edges, filled by reflection."""
    height, width, _ = source.shape
    if box.y0 >= 0 and box.x0 >= 0 and box.y1 <= height and box.x1 <= width:
        return source.read(box)
    rows = reflect_indices(box.y0, box.y1, height)
    cols = reflect_indices(box.x0, box.x1, width)
    y0, x0 = int(rows.min()), int(cols.min())
    slab = source.read(Box(y0, int(rows.max()) + 1, x0, int(cols.max()) + 1))
    return slab[np.ix_(rows - y0, cols - x0)]
