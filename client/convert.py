"""Convert one image through a model: read lazily, tile with halo, stream, crop-stitch, write.

Memory is bounded by the tiles in flight plus the reorder buffer (which the in-flight window also
bounds), never by the image size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.blending import WINDOWS, BlendGrid, BlendStitcher, Window, argmax_labels, cast_to
from tilecast.client.metadata import level_for_resolution, read_metadata
from tilecast.client.normalization import image_parameters, wire_cast
from tilecast.client.options import STITCHES
from tilecast.client.options import ConvertOptions as ConvertOptions  # noqa: PLC0414 (re-exported: its old home)
from tilecast.client.outputs import output_targets, write_outputs
from tilecast.client.reader import ImageSource, open_image, read_reflected
from tilecast.client.remote import Client, TileReply
from tilecast.client.resilient import stream_with_retries
from tilecast.client.tiling import Box, Grid, crop_core
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import manifest_pb2

Array = npt.NDArray[Any]
Progress = Callable[[int, int], None]  # (tiles done, tiles total)

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


def _in_order(results: Iterator[TileReply], count: int, source: Callable[[int], Box],
              progress: Progress | None) -> Iterator[tuple[int, list[Array]]]:
    """Each tile's outputs in id order, holding early arrivals in a reorder buffer (bounded by the window)."""
    waiting: dict[int, list[Array]] = {}
    for index in range(count):
        while index not in waiting:
            try:
                reply = next(results)
            except StopIteration:
                raise InvalidArgument(f"the server ended the stream before tile {index}") from None
            waiting[reply.id] = reply.outputs
        outputs = waiting.pop(index)
        box = source(index)
        if any(o.shape[:2] != (box.height, box.width) for o in outputs):
            raise InvalidArgument(f"tile {index}: model returned {outputs[0].shape[:2]}, "
                                  f"expected {(box.height, box.width)}")
        if progress:
            progress(index + 1, count)
        yield index, outputs


def use_blend(manifest: manifest_pb2.ModelManifest, options: ConvertOptions) -> bool:
    """Blend when asked, or (auto) when cropping cannot reproduce whole-image inference."""
    if options.stitch not in STITCHES:
        raise InvalidArgument(f"stitching {options.stitch!r} is not one of {', '.join(STITCHES)}")
    if options.stitch != "auto":
        return options.stitch == "blend"
    t = manifest.tiling
    halo = t.halo if options.halo is None else options.halo
    return t.has_global_ops or t.receptive_radius > halo


def blend_plan(manifest: manifest_pb2.ModelManifest, crop: Grid, options: ConvertOptions) -> BlendGrid:
    """The overlapping tile grid for blend stitching (same tile size and default halo as the checked crop
    grid), checked against what the model accepts."""
    t = manifest.tiling
    overlap = 2 * crop.halo if options.overlap is None else options.overlap
    if options.blend_window not in WINDOWS:
        raise InvalidArgument(f"blend window {options.blend_window!r} is not one of {', '.join(WINDOWS)}")
    if overlap % t.size_multiple or not 0 <= overlap <= crop.tile_size:
        raise InvalidArgument(f"blend overlap {overlap} must be a multiple of {t.size_multiple} "
                              f"between 0 and the tile size {crop.tile_size}")
    if not t.min_size <= crop.tile_size + overlap <= t.max_size:
        raise InvalidArgument(f"tile size {crop.tile_size} + overlap {overlap} is outside the model's "
                              f"input range {t.min_size}..{t.max_size}")
    return BlendGrid(crop.height, crop.width, crop.tile_size, overlap)


def cropped_blocks(grid: Grid, tiles: Iterator[tuple[int, list[Array]]]) -> Iterator[list[Array]]:
    """Each tile's core, cut from each of its outputs."""
    for index, outputs in tiles:
        tile = grid.tile(*divmod(index, grid.cols))
        yield [crop_core(o, tile) for o in outputs]


def blended_blocks(manifest: manifest_pb2.ModelManifest, grid: BlendGrid, window: Window,
                   tiles: Iterator[tuple[int, list[Array]]]) -> Iterator[list[Array]]:
    """Blend images and class probabilities; class labels become the argmax of blended probabilities."""
    labels = manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS
    probs = manifest_pb2.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES
    kinds = [o.interpretation for o in manifest.outputs]
    dtypes = [tensors.to_numpy_dtype(o.dtype) for o in manifest.outputs]
    blended = [i for i, k in enumerate(kinds) if k != labels]
    probabilities = [i for i, k in enumerate(kinds) if k == probs]
    if len(blended) < len(kinds) and not probabilities:
        raise InvalidArgument(f"model {manifest.name} returns class labels only, which cannot be blended; "
                              "use --stitch crop, or export it with --probabilities")
    counts = [manifest.outputs[i].channels for i in blended]
    stitcher = BlendStitcher(grid, sum(counts), window)
    for index, outputs in tiles:
        values = stitcher.add(index, np.concatenate([outputs[i] for i in blended], axis=2))
        parts = dict(zip(blended, np.split(values, np.cumsum(counts)[:-1].tolist(), axis=2), strict=True))
        yield [cast_to(parts[i], dtypes[i]) if i in parts else argmax_labels(parts[probabilities[0]], dtypes[i])
               for i in range(len(kinds))]


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
    """Run `model` over the whole image at `input_path`; write a tiled BigTIFF, or a pyramidal OME-TIFF when
    `output_path` ends in .ome.tif, at `output_path` (and beside it for further outputs)."""
    options = options or ConvertOptions()
    started = time.perf_counter()
    if options.microns_per_pixel is not None:
        options = dataclasses.replace(options, level=level_for_resolution(input_path, options.microns_per_pixel))
    manifest = client.get_model(model, version)
    if is_classifier(manifest):
        from tilecast.client.heatmap import classify_image

        return classify_image(client, manifest, input_path, output_path, options, progress=progress,
                              description=description)
    image = open_image(input_path, options.level)
    try:
        to_model = check_compatible(manifest, image, options.channels)  # type: ignore[arg-type]  # "gray": the pipeline's own change
        parameters = image_parameters(manifest, input_path, options.level, list(options.channels))  # type: ignore[arg-type]  # "gray": the pipeline's own change
        height, width, _ = image.shape
        blend = use_blend(manifest, options)
        crop_grid = plan_for(manifest, height, width, options)
        blend_grid = blend_plan(manifest, crop_grid, options) if blend else None
        count = len(blend_grid) if blend_grid else len(crop_grid)

        def source(index: int) -> Box:
            return blend_grid.source(index) if blend_grid else crop_grid.tile(*divmod(index, crop_grid.cols)).source

        def read_tile(index: int) -> Array:
            return np.ascontiguousarray(to_model(read_reflected(image, source(index))))

        targets = output_targets(manifest, output_path, height, width, read_metadata(input_path, options.level),
                                 options.channels)  # type: ignore[arg-type]  # "gray": the pipeline's own change
        results = stream_with_retries(client, model, range(count), read_tile, version=manifest.version,
                                      window=options.window, policy=options.retry, parameters=parameters,
                                      tile_deadline_ms=options.tile_deadline_ms)
        ordered = _in_order(results, count, source, progress)
        blocks = (blended_blocks(manifest, blend_grid, options.blend_window, ordered) if blend_grid
                  else cropped_blocks(crop_grid, ordered))
        with contextlib.closing(results):  # cancels the stream if writing fails
            write_outputs(targets, blocks, tile_size=crop_grid.tile_size, compression=options.compression,
                          stamp=description)
    finally:
        image.close()
    return ConvertResult(input_path, output_path, targets[0].shape, count, time.perf_counter() - started)
