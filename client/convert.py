"""Convert one image through a model: read lazily, tile with halo, stream, crop-stitch, write.

Memory is bounded by the tiles in flight plus the reorder buffer (which the in-flight window also
bounds), never by the image size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.normalization import image_parameters, wire_cast
from tilecast.client.reader import ImageSource, open_image, read_reflected
from tilecast.client.remote import Client, TileReply
from tilecast.client.resilient import RetryPolicy, stream_with_retries
from tilecast.client.tiling import Grid, crop_core
from tilecast.client.writer import write_tiled_tiffs
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import manifest_pb2

Array = npt.NDArray[Any]
Progress = Callable[[int, int], None]  # (tiles done, tiles total)


@dataclass(frozen=True)
class ConvertOptions:
    tile_size: int | None = None  # None: the manifest's
    halo: int | None = None  # None: the manifest's (measured at export)
    window: int = 32  # tiles in flight
    compression: str = "zlib"
    level: int = 0  # pyramid level of the input
    channels: tuple[int, ...] = ()  # input channels / z-planes fed to the model, in this order; () = all
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # when the server restarts mid-image
    # classifiers only
    stride: int = 0  # heat map cell in input pixels; 0 = the model's patch size
    tissue_only: bool = False  # skip patches that a low-resolution tissue mask calls background
    min_tissue: float = 0.25  # fraction of a cell that must be tissue to be classified


@dataclass(frozen=True)
class ConvertResult:
    input: Path
    output: Path
    shape: tuple[int, int, int]
    tiles: int
    seconds: float

    @property
    def megapixels_per_second(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6 / max(self.seconds, 1e-9)


def plan_for(manifest: manifest_pb2.ModelManifest, height: int, width: int, options: ConvertOptions) -> Grid:
    """The tile grid for an image, from the manifest unless the options override it."""
    t = manifest.tiling
    tile_size = options.tile_size or t.tile_size
    halo = t.halo if options.halo is None else options.halo
    if tile_size % 16 or tile_size % t.size_multiple:
        raise InvalidArgument(f"tile size {tile_size} must be a multiple of 16 and of {t.size_multiple}")
    if halo % t.size_multiple or halo < 0:
        raise InvalidArgument(f"halo {halo} must be a non-negative multiple of {t.size_multiple}")
    if tile_size + 2 * halo > t.max_size:
        raise InvalidArgument(
            f"tile size {tile_size} + 2 x halo {halo} exceeds the model's largest input {t.max_size}"
        )
    return Grid(height, width, tile_size, halo, t.size_multiple, t.min_size)


def check_compatible(manifest: manifest_pb2.ModelManifest, image: ImageSource,
                     channels: tuple[int, ...] = ()) -> Callable[[Array], Array]:
    """What turns the file's tiles into the model's input (channel choice, dtype), or a clear error."""
    spec = manifest.inputs[0]
    available = image.shape[2]
    bad = [c for c in channels if not 0 <= c < available]
    if bad:
        raise InvalidArgument(f"{image.path} has channels/planes 0..{available - 1}; {bad} do not exist")
    count = len(channels) or available
    if count != spec.channels:
        chosen = f"{count} channel(s) chosen from" if channels else "has"
        raise InvalidArgument(f"{image.path} {chosen} {available} channel(s); model {manifest.name} takes "
                              f"{spec.channels} (choose them with --channels, e.g. --channels 0,2)")
    cast = wire_cast(image.dtype, manifest)
    if not channels:
        return cast
    picked = list(channels)
    return lambda tile: cast(np.ascontiguousarray(tile[:, :, picked]))


def is_classifier(manifest: manifest_pb2.ModelManifest) -> bool:
    return any(o.layout == manifest_pb2.LAYOUT_NC for o in manifest.outputs)


def output_paths(manifest: manifest_pb2.ModelManifest, output_path: Path) -> list[Path]:
    """The first output goes to `output_path`; others (e.g. probabilities) beside it, named by output."""
    stem = output_path.name.removesuffix(output_path.suffix)
    return [output_path] + [output_path.with_name(f"{stem}.{spec.name}{output_path.suffix}")
                            for spec in manifest.outputs[1:]]


def _ordered_cores(results: Iterator[TileReply], grid: Grid, progress: Progress | None) -> Iterator[list[Array]]:
    """Yield each tile's cores (one per output) in grid order, holding early arrivals in a reorder buffer."""
    waiting: dict[int, list[Array]] = {}
    for tile in grid:
        while tile.index not in waiting:
            try:
                reply = next(results)
            except StopIteration:
                raise InvalidArgument(f"the server ended the stream before tile {tile.index}") from None
            waiting[reply.id] = reply.outputs
        outputs = waiting.pop(tile.index)
        expected = (tile.source.height, tile.source.width)
        if any(o.shape[:2] != expected for o in outputs):
            raise InvalidArgument(f"tile {tile.index}: model returned {outputs[0].shape[:2]}, expected {expected}")
        if progress:
            progress(tile.index + 1, len(grid))
        yield [crop_core(o, tile) for o in outputs]


def convert_image(
    client: Client,
    model: str,
    input_path: Path,
    output_path: Path,
    options: ConvertOptions | None = None,
    *,
    version: int = 0,
    progress: Progress | None = None,
    description: str | None = None,
) -> ConvertResult:
    """Run `model` over the whole image at `input_path` and write a tiled BigTIFF at `output_path`."""
    options = options or ConvertOptions()
    started = time.perf_counter()
    manifest = client.get_model(model, version)
    if is_classifier(manifest):
        from tilecast.client.heatmap import classify_image

        return classify_image(client, manifest, input_path, output_path, options, progress=progress,
                              description=description)
    image = open_image(input_path, options.level)
    try:
        to_model = check_compatible(manifest, image, options.channels)
        parameters = image_parameters(manifest, input_path, options.level, list(options.channels))
        height, width, _ = image.shape
        grid = plan_for(manifest, height, width, options)

        def read_tile(index: int) -> Array:
            return np.ascontiguousarray(to_model(read_reflected(image, grid.tile(*divmod(index, grid.cols)).source)))

        targets = [(path, (height, width, spec.channels), tensors.to_numpy_dtype(spec.dtype))
                   for path, spec in zip(output_paths(manifest, output_path), manifest.outputs, strict=True)]
        results = stream_with_retries(client, model, range(len(grid)), read_tile, version=manifest.version,
                                      window=options.window, policy=options.retry, parameters=parameters)
        with contextlib.closing(results):  # cancels the stream if writing fails
            write_tiled_tiffs(targets, _ordered_cores(results, grid, progress), tile_size=grid.tile_size,
                              compression=options.compression, description=description)
    finally:
        image.close()
    return ConvertResult(input_path, output_path, targets[0][1], len(grid), time.perf_counter() - started)
