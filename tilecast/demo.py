"""`tilecast demo`: the whole flow once, on the bundled models and real 4096x4096 slide-like images.

Builds grayscale and colour mosaics of scikit-image's immunohistochemistry sample and a 16-bit
fluorescence field of synthetic nuclei, starts `tilecast serve` on localhost, colourises the grayscale
mosaic (generator: output TIFF and a side-by-side preview PNG), maps nuclear density over the colour
one (patch classifier: heat map, overlay PNG, CSV) and segments the nuclei (segmenter: label mask,
preview, Dice against the field's exact mask), then stops the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from tilecast.console import console, out, user_errors
from tilecast.local import child_process, free_port, serve_command

if TYPE_CHECKING:
    from tilecast.client import Client, ConvertResult

MODEL = "ihc-colorize"
HEATMAP_MODEL = "ihc-density"
SEGMENTER = "nuclei"
BLOCK = 512  # edge of the sample image
PREVIEW_CROP = 768
FIELD_SEED = 20481  # a draw of its own, outside the segmenter's training and validation streams


def build_input(path: Path, size: int, colour: bool = False, compression: str = "zlib") -> None:
    """A size x size mosaic of the IHC sample (grayscale, or its RGB original) in its 8 orientations,
    written tile by tile: a real image of any size without holding it."""
    from tilecast.client.writer import write_tiled_tiff
    from tilecast.training.data.samples import dihedral, ihc_image, to_gray

    sample = ihc_image() if colour else to_gray(ihc_image())
    blocks = -(-size // BLOCK)

    def tiles() -> Iterator[np.ndarray]:
        for row in range(blocks):
            for col in range(blocks):
                yield np.ascontiguousarray(dihedral(sample, (row * 3 + col * 5) % 8))

    write_tiled_tiff(path, tiles(), shape=(size, size, sample.shape[2]), dtype=np.dtype(np.uint8), tile_size=BLOCK,
                     compression=compression)


def build_fluorescence(path: Path, size: int) -> np.ndarray:
    """A size x size 16-bit fluorescence field of synthetic nuclei (a camera frame's size at 2048), as a
    tiled TIFF; returns its exact nucleus mask, which the segmenter's output is scored against."""
    from tilecast.client.writer import write_tiled_tiff
    from tilecast.training.data.nuclei import synthesize

    image, truth = synthesize(np.random.default_rng(FIELD_SEED), size)
    if image.dtype == np.uint8:  # the synthesizer draws 8- or 16-bit at random; a camera frame is 16-bit
        image = image.astype(np.uint16) * 257
    blocks = -(-size // BLOCK)
    padded = np.pad(image, ((0, blocks * BLOCK - size), (0, blocks * BLOCK - size), (0, 0)))
    tiles = (padded[y:y + BLOCK, x:x + BLOCK] for y in range(0, size, BLOCK) for x in range(0, size, BLOCK))
    write_tiled_tiff(path, tiles, shape=(size, size, 1), dtype=np.dtype(np.uint16), tile_size=BLOCK)
    return np.asarray(truth)


def stretched(image: np.ndarray) -> np.ndarray:
    """A uint8 HWC view for a preview: 1st-99.8th percentile to 0-255 (labels 0/1 become black/white)."""
    low, high = (float(v) for v in np.percentile(image, (1, 99.8)))
    scaled = (image.astype(np.float64) - low) / max(high - low, 1e-9) * 255
    return np.clip(scaled, 0, 255).astype(np.uint8).reshape(*image.shape[:2], -1)


def convert_with_progress(client: Client, model: str, source: Path, result: Path) -> ConvertResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from tilecast.client import convert_image

    with Progress(TextColumn(model), BarColumn(), TextColumn("{task.completed}/{task.total} tiles"),
                  TimeRemainingColumn(), console=out) as bar:
        task = bar.add_task(model, total=None)
        return convert_image(client, model, source, result,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))


@user_errors
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the inputs, outputs and previews.")] = Path("demo-output"),
    repository: Annotated[Path, typer.Option(help="Model repository.")] = Path("models"),
    size: Annotated[int, typer.Option(min=BLOCK, help="Edge of the generated input images in pixels.")] = 4096,
) -> None:
    """Run the end-to-end demo: build 4096x4096 inputs, serve, colourise one, map density over the other,
    segment nuclei in a fluorescence field."""
    import tifffile
    from PIL import Image

    from tilecast.client import Client
    from tilecast.client.heatmap import heatmap_paths
    from tilecast.client.thumbnail import side_by_side, thumbnail
    from tilecast.training.metrics import dice_iou

    for model in (MODEL, HEATMAP_MODEL, SEGMENTER):
        if not (repository / model).is_dir():
            raise FileNotFoundError(f"{repository / model} is missing; run the demo from the repository root")
    output.mkdir(parents=True, exist_ok=True)
    gray, colourised, preview = output / "ihc-gray.tif", output / "ihc-colorized.tif", output / "preview.png"
    colour, density = output / "ihc-rgb.tif", output / "ihc-density.tif"
    field, labels, nuclei_preview = output / "nuclei-field.tif", output / "nuclei-labels.tif", output / "nuclei.png"
    field_size = max(BLOCK, size // 2)
    started = time.perf_counter()
    build_input(gray, size)
    build_input(colour, size, colour=True)
    truth = build_fluorescence(field, field_size)
    out.print(f"inputs: {gray} and {colour} ({size}x{size}, grayscale and RGB), {field} ({field_size}x{field_size}, "
              f"16-bit fluorescence); {time.perf_counter() - started:.1f} s to build")

    port = free_port()
    with child_process(serve_command(repository, port), quiet=False) as server, \
            Client(f"127.0.0.1:{port}") as client:
        client.wait_ready(timeout=60)
        if server.poll() is not None:
            raise RuntimeError("the server exited at start; see its messages above")
        generated = convert_with_progress(client, MODEL, gray, colourised)
        mapped = convert_with_progress(client, HEATMAP_MODEL, colour, density)
        segmented = convert_with_progress(client, SEGMENTER, field, labels)
    Image.fromarray(side_by_side(thumbnail(gray, 1024), thumbnail(colourised, 1024))).save(preview)
    out.print(f"output: {generated.output} ({generated.tiles} tiles, {generated.seconds:.1f} s, "
              f"{generated.megapixels_per_second:.2f} MP/s through the server)")
    out.print(f"preview: {preview} (input left, model output right)")
    _, overlay, table = heatmap_paths(density)
    out.print(f"heat map: {density}, {overlay}, {table} ({mapped.tiles} patches, {mapped.seconds:.1f} s, "
              f"{mapped.megapixels_per_second:.2f} MP/s)")
    found = tifffile.imread(labels).reshape(truth.shape)
    crop = (slice(0, PREVIEW_CROP), slice(0, PREVIEW_CROP))  # full resolution: nuclei are 8-32 px across
    Image.fromarray(side_by_side(stretched(tifffile.imread(field)[crop]), stretched(found[crop]))).save(nuclei_preview)
    dice = dice_iou(found, truth, 2)["dice"]
    out.print(f"nuclei: {labels}, {nuclei_preview} (a {PREVIEW_CROP} px corner; {segmented.tiles} tiles, "
              f"{segmented.seconds:.1f} s, {segmented.megapixels_per_second:.2f} MP/s); "
              f"Dice {dice:.3f} against the field's exact mask")
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")
