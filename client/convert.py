"""Convert one image through a model in five steps: open the file once, plan its tiles, stream them
through the server, stitch the answers into output blocks, and sink those into files that appear together
or not at all.

Memory is bounded by the tiles in flight plus the reorder buffer (which the in-flight window also
bounds), never by the image size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tilecast.client.heatmap import OVERLAY_EDGE, HeatMapSink, empty_warnings
from tilecast.client.image import OpenedImage, open_input
from tilecast.client.normalization import ModelInput, image_parameters, model_input
from tilecast.client.options import ConvertOptions
from tilecast.client.outputs import output_targets, write_outputs
from tilecast.client.plan import BlendPlan, CellPlan, Plan, plan_tiles
from tilecast.client.reader import read_reflected
from tilecast.client.remote import Array, Client
from tilecast.client.stitch import Answers, blended, cropped, heat_map
from tilecast.client.streaming import Progress, StreamSettings, stream_plan
from tilecast.client.tissue import tissue_mask
from tilecast.proto.spec import ModelSpec

__all__ = ["ConvertOptions", "ConvertResult", "Progress", "convert_image"]


@dataclass(frozen=True)
class ConvertResult:
    input: Path
    output: Path
    shape: tuple[int, int, int]
    tiles: int
    seconds: float
    warnings: tuple[str, ...] = ()  # what the user should know about a result that is complete but odd

    @property
    def megapixels_per_second(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6 / max(self.seconds, 1e-9)


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
    `output_path` ends in .ome.tif, at `output_path` (and beside it for further outputs); a classifier
    writes a heat map there, with its overlay and CSV beside it. `description` stamps the outputs."""
    options = options or ConvertOptions()
    started = time.perf_counter()
    spec = ModelSpec.of(client.get_model(model, version))
    with open_input(input_path, options.level, options.microns_per_pixel) as image:  # 1. open
        fed = model_input(spec, image.path, image.shape[2], image.source.dtype, options.channels)
        height, width, _ = image.shape
        plan = plan_tiles(spec, height, width, options,  # 2. plan
                          tissue_mask=lambda: tissue_mask(image.overview(OVERLAY_EDGE)))
        answers = stream_plan(client, spec, plan, tile_reader(image, plan, fed),  # 3. stream
                              StreamSettings(options.window, options.retry, options.tile_deadline_ms),
                              image_parameters(spec, image.overview, fed), progress)
        with contextlib.closing(answers):  # cancels the stream if stitching or writing fails
            channels, warnings = stitch_and_sink(spec, image, plan, answers, output_path, options,
                                                 description)  # 4. stitch, 5. sink
    return ConvertResult(input_path, output_path, (height, width, channels), len(plan.ids),
                         time.perf_counter() - started, warnings)


def tile_reader(image: OpenedImage, plan: Plan, fed: ModelInput) -> Callable[[int], Array]:
    """Reads what the plan says each tile shows the model, as the model's input."""
    return lambda index: fed(read_reflected(image.source, plan.source(index)))


def stitch_and_sink(spec: ModelSpec, image: OpenedImage, plan: Plan, answers: Answers, output_path: Path,
                    options: ConvertOptions, stamp: str | None) -> tuple[int, tuple[str, ...]]:
    """Stitch the answers with the plan's stitcher and write them with the output's sink; returns the
    channels of the (first) output and any warnings about the result."""
    height, width, _ = image.shape
    if isinstance(plan, CellPlan):
        scores = heat_map(spec, plan, answers)
        names = list(spec.manifest.class_names) or [f"class {k}" for k in range(scores.shape[-1])]
        HeatMapSink(output_path, plan, names, image.metadata).write(scores, image.overview(OVERLAY_EDGE), stamp)
        return scores.shape[-1], empty_warnings(scores, plan, options.min_tissue)
    targets = output_targets(spec, output_path, height, width, image.metadata, options.channels)
    blocks = blended(spec, plan, options.blend_window, answers) if isinstance(plan, BlendPlan) \
        else cropped(plan, answers)
    write_outputs(targets, blocks, tile_size=plan.grid.tile_size, compression=options.compression, stamp=stamp)
    return targets[0].shape[2], ()
