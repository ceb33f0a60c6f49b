"""What a conversion may be told: tiling, stitching, output and classifier settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tilecast.client.blending import Window
from tilecast.client.resilient import RetryPolicy

GRAY = "gray"  # `channels`: feed one luminance channel made from RGB (ITU-R BT.601 weights)
Channels = tuple[int, ...] | Literal["gray"]


@dataclass(frozen=True)
class ConvertOptions:
    tile_size: int | None = None  # None: the manifest's
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
