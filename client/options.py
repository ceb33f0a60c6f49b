"""How to convert an image: `ConvertOptions`, checked once when it is made.

Every field is checked here, with one message per field that names it as a `tilecast convert` user spells
it (`--tile-size`), the bad value and what is valid. What depends on the model (a tile size that is a
multiple of the model's size multiple, a halo and tile that fit its largest input) is checked where the
manifest is known, in the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from tilecast.client.blending import WINDOWS, Window
from tilecast.client.resilient import RetryPolicy
from tilecast.client.writer import COMPRESSIONS
from tilecast.proto.errors import InvalidOption

STITCHES = ("auto", "crop", "blend")
GRAY = "gray"  # `channels`: feed one luminance channel made from RGB (ITU-R BT.601 weights)
TILE_MULTIPLE = 16  # tiled TIFF tiles are multiples of 16 pixels
Channels = tuple[int, ...] | Literal["gray"]


@dataclass(frozen=True)
class ConvertOptions:
    """How `convert_image` tiles, streams and writes one image; raises InvalidOption on a bad field."""

    tile_size: int | None = None  # None (or 0): the manifest's
    halo: int | None = None  # None: the manifest's (measured at export)
    stitch: str = "auto"  # crop, blend, or auto: blend only where crop cannot be exact
    blend_window: Window = "gaussian"
    overlap: int | None = None  # blend: pixels shared by neighbouring tiles; None = 2 x halo
    window: int = 32  # tiles in flight
    tile_deadline_ms: int = 0  # a tile not started within this budget is sent again (0: no per-tile deadline)
    compression: str = "zlib"
    level: int = 0  # pyramid level of the input
    microns_per_pixel: float | None = None  # read the level nearest this resolution instead of `level`
    # input channels / z-planes fed to the model, in this order; () = all; "gray": RGB -> luminance
    # (0.299 R + 0.587 G + 0.114 B, ITU-R BT.601), rounded into the input's dtype
    channels: Channels = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # when the server restarts mid-image
    # classifiers only
    stride: int = 0  # heat map cell in input pixels; 0 = the model's patch size
    tissue_only: bool = False  # skip patches that a low-resolution tissue mask calls background
    min_tissue: float = 0.25  # fraction of a cell that must be tissue to be classified

    def __post_init__(self) -> None:
        _check_geometry(self)
        _check_choices(self)
        _check_counts(self)
        _check_channels(self.channels)
        _check_retry(self.retry)


def _check_geometry(o: ConvertOptions) -> None:
    if o.tile_size is not None and (o.tile_size < 0 or o.tile_size % TILE_MULTIPLE):
        raise InvalidOption("--tile-size", o.tile_size,
                            f"give a positive multiple of {TILE_MULTIPLE} pixels (0: the model's tile size)")
    if o.halo is not None and o.halo < 0:
        raise InvalidOption("--halo", o.halo, "give 0 or more pixels of context per side (-1: the model's halo)")
    if o.overlap is not None and o.overlap < 0:
        raise InvalidOption("--overlap", o.overlap, "give 0 or more pixels (-1: twice the halo)")
    if o.stride < 0:
        raise InvalidOption("--stride", o.stride, "give a heat-map cell of 1 or more pixels (0: the patch size)")
    if not 0.0 <= o.min_tissue <= 1.0:  # also refuses NaN
        raise InvalidOption("--min-tissue", o.min_tissue, "give a fraction between 0 and 1, e.g. 0.25")


def _check_choices(o: ConvertOptions) -> None:
    if o.stitch not in STITCHES:
        raise InvalidOption("--stitch", o.stitch, f"use one of {', '.join(STITCHES)}")
    if o.blend_window not in WINDOWS:
        raise InvalidOption("--blend-window", o.blend_window, f"use one of {', '.join(WINDOWS)}")
    if o.compression not in COMPRESSIONS:
        raise InvalidOption("--compression", o.compression, f"use one of {', '.join(COMPRESSIONS)}")


def _check_counts(o: ConvertOptions) -> None:
    if o.window < 1:
        raise InvalidOption("--window", o.window, "give the tiles to keep in flight, 1 or more")
    if o.tile_deadline_ms < 0:
        raise InvalidOption("--tile-deadline-ms", o.tile_deadline_ms, "a per-tile deadline must be 0 (none) or a "
                            f"positive number of ms, not {o.tile_deadline_ms}")
    if o.level < 0:
        raise InvalidOption("--level", o.level, "give a pyramid level, 0 (full resolution) or more")
    mpp = o.microns_per_pixel
    if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
        raise InvalidOption("--mpp", mpp, "give a pixel size in µm greater than 0 (0: use --level)")


def _check_channels(channels: Channels) -> None:
    if isinstance(channels, str):
        if channels != GRAY:
            raise InvalidOption("--channels", channels, f"give indices like 0,2, ranges like 0-6, or {GRAY}")
        return
    bad = [c for c in channels if c < 0]
    if bad:
        raise InvalidOption("--channels", ",".join(map(str, channels)),
                            "channel indices start at 0; give indices like 0,2 or ranges like 0-6")


def _check_retry(retry: RetryPolicy) -> None:
    if retry.attempts < 0:
        raise InvalidOption("retry.attempts", retry.attempts, "give 0 (no restarts) or more")
    for name in ("first_backoff_s", "max_backoff_s"):
        if not getattr(retry, name) >= 0:
            raise InvalidOption(f"retry.{name}", getattr(retry, name), "give 0 or more seconds")
    if not retry.reconnect_timeout_s > 0:
        raise InvalidOption("retry.reconnect_timeout_s", retry.reconnect_timeout_s, "give more than 0 seconds")
