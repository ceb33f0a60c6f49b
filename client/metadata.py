"""What an input says about its pixels: physical size per pyramid level and channel names.

Sources, in order: OME-XML (PhysicalSizeX/Y with their units, Channel names), the Aperio description
(`MPP = 0.499`), then the TIFF resolution tags (pixels per centimetre or inch). Files that say
nothing (PNG, JPEG, TIFFs without a resolution unit) have no pixel size: outputs then carry none.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilecast.client.reader import ImageReadError, TiffSource, is_tiff_path, open_image

log = logging.getLogger(__name__)

MICRONS_PER_UNIT = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "Å": 1e-4}
RESOLUTION_UNIT_MICRONS = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: inch, centimetre
MPP_TOLERANCE = 0.25  # a level within this relative distance of a requested µm/px is accepted


@dataclass(frozen=True)
class PixelMetadata:
    """Physical pixel size (y, x) in micrometres, if known, and channel names (may be empty)."""

    pixel_size_um: tuple[float, float] | None = None
    channel_names: tuple[str, ...] = ()

    def scaled(self, factor_y: float, factor_x: float) -> PixelMetadata:
        """The same image resampled so that one pixel covers factor x the original."""
        if self.pixel_size_um is None:
            return self
        return PixelMetadata((self.pixel_size_um[0] * factor_y, self.pixel_size_um[1] * factor_x), self.channel_names)


def resolution_tags(metadata: PixelMetadata) -> dict[str, Any]:
    """TIFF XResolution/YResolution (pixels per centimetre) for a known pixel size; none when unknown."""
    if metadata.pixel_size_um is None:
        return {}
    y, x = metadata.pixel_size_um
    return {"resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER"}


def _ome(xml: str) -> PixelMetadata:
    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return PixelMetadata()
    names = tuple(c.get("Name", "") for c in pixels if c.tag.endswith("Channel"))
    size: list[float] = []
    for axis in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is None or unit not in MICRONS_PER_UNIT:
            return PixelMetadata(None, names if any(names) else ())
        size.append(float(value) * MICRONS_PER_UNIT[unit])
    return PixelMetadata((size[0], size[1]), names if any(names) else ())


def _resolution_tags(page: Any) -> tuple[float, float] | None:
    unit = page.tags.get("ResolutionUnit")
    microns = RESOLUTION_UNIT_MICRONS.get(int(unit.value)) if unit is not None else None
    y, x = page.tags.get("YResolution"), page.tags.get("XResolution")
    if microns is None or y is None or x is None:
        return None
    per_unit = [num / den if den else 0.0 for num, den in (y.value, x.value)]
    if min(per_unit) <= 0:
        return None
    return microns / per_unit[0], microns / per_unit[1]


def _level_metadata(tif: Any, level: int) -> PixelMetadata:
    series = tif.series[0]
    base, page = series.levels[0], series.levels[level]
    found = PixelMetadata()
    if tif.is_ome and tif.ome_metadata:
        found = _ome(tif.ome_metadata)
    if found.pixel_size_um is None and tif.is_svs:
        match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", tif.pages[0].description)
        if match:
            found = PixelMetadata((float(match.group(1)),) * 2, found.channel_names)
    if found.pixel_size_um is None:
        found = PixelMetadata(_resolution_tags(series.pages[0] if series.pages else tif.pages[0]),
                              found.channel_names)
    factor_y = base.shape[base.axes.index("Y")] / page.shape[page.axes.index("Y")]
    factor_x = base.shape[base.axes.index("X")] / page.shape[page.axes.index("X")]
    return found.scaled(factor_y, factor_x)


def tiff_metadata(tif: Any, path: Path, level: int = 0) -> PixelMetadata:
    """Pixel size of `level` and channel names of an open TIFF; empty (with a warning) when unreadable."""
    import tifffile

    try:
        return _level_metadata(tif, level)
    except (OSError, ValueError, KeyError, IndexError, ET.ParseError, tifffile.TiffFileError) as exc:
        log.warning("%s: pixel size and channel names unreadable (%s); the output carries none", path, exc)
        return PixelMetadata()


def read_metadata(path: Path, level: int = 0) -> PixelMetadata:
    """Pixel size of `level` and channel names of a TIFF-based image; empty for other files."""
    if not is_tiff_path(path):
        return PixelMetadata()
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_metadata(tif, path, level)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        log.warning("%s: pixel size and channel names unreadable (%s); the output carries none", path, exc)
        return PixelMetadata()


def nearest_level(tif: Any | None, path: Path, microns_per_pixel: float) -> int:
    """The pyramid level of an open TIFF (None: a file without levels) whose pixel size is nearest
    `microns_per_pixel`; a clear error when the file does not say its pixel size or no level is within 25 %."""
    if not microns_per_pixel > 0:
        raise ImageReadError(f"a target resolution must be positive, not {microns_per_pixel} µm/px")
    sizes: list[float] = []
    for level in range(len(tif.series[0].levels) if tif is not None else 0):
        size = _level_metadata(tif, level).pixel_size_um
        if size is None:
            break
        sizes.append(math.sqrt(size[0] * size[1]))
    if not sizes:
        raise ImageReadError(f"{path} does not record its pixel size; choose a pyramid level with --level")
    best = min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / microns_per_pixel)))
    if abs(sizes[best] / microns_per_pixel - 1) > MPP_TOLERANCE:
        available = ", ".join(f"level {i}: {s:.3g}" for i, s in enumerate(sizes))
        raise ImageReadError(f"{path} has no level near {microns_per_pixel:g} µm/px ({available} µm/px); "
                             "choose one of these resolutions or a --level")
    return best


def level_for_resolution(path: Path, microns_per_pixel: float) -> int:
    """The pyramid level of the file at `path` nearest `microns_per_pixel` (see `nearest_level`)."""
    if not microns_per_pixel > 0:
        raise ImageReadError(f"a target resolution must be positive, not {microns_per_pixel} µm/px")
    source = open_image(path)  # missing or unreadable files fail here, with their own message
    try:
        return nearest_level(source.tif if isinstance(source, TiffSource) else None, path, microns_per_pixel)
    finally:
        source.close()
