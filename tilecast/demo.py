"""`tilecast demo`: the whole flow once, on the bundled models and real 4096x4096 slide-like images.

Builds grayscale and colour mosaics of scikit-image's immunohistochemistry sample, starts `tilecast
serve` on localhost, colourises the grayscale one (generator: output TIFF and a side-by-side preview
PNG) and maps nuclear density over the colour one (patch classifier: heat map, overlay PNG, CSV),
then stops the server.
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
BLOCK = 512  # edge of the sample image


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
    size: Annotated[int, typer.Option(help="Edge of the generated input images in pixels.")] = 4096,
) -> None:
    """Run the end-to-end demo: build 4096x4096 inputs, serve, colourise one, map density over the other."""
    from PIL import Image

    from tilecast.client import Client
    from tilecast.client.heatmap import heatmap_paths
    from tilecast.client.thumbnail import side_by_side, thumbnail

    for model in (MODEL, HEATMAP_MODEL):
        if not (repository / model).is_dir():
            raise FileNotFoundError(f"{repository / model} is missing; run the demo from the repository root")
    output.mkdir(parents=True, exist_ok=True)
    gray, colourised, preview = output / "ihc-gray.tif", output / "ihc-colorized.tif", output / "preview.png"
    colour, density = output / "ihc-rgb.tif", output / "ihc-density.tif"
    started = time.perf_counter()
    build_input(gray, size)
    build_input(colour, size, colour=True)
    out.print(f"inputs: {gray} and {colour} ({size}x{size}, grayscale and RGB, "
              f"{time.perf_counter() - started:.1f} s to build)")

    port = free_port()
    with child_process(serve_command(repository, port), quiet=False) as server, \
            Client(f"127.0.0.1:{port}") as client:
        client.wait_ready(timeout=60)
        if server.poll() is not None:
            raise RuntimeError("the server exited at start; see its messages above")
        generated = convert_with_progress(client, MODEL, gray, colourised)
        mapped = convert_with_progress(client, HEATMAP_MODEL, colour, density)
    Image.fromarray(side_by_side(thumbnail(gray, 1024), thumbnail(colourised, 1024))).save(preview)
    out.print(f"output: {generated.output} ({generated.tiles} tiles, {generated.seconds:.1f} s, "
              f"{generated.megapixels_per_second:.2f} MP/s through the server)")
    out.print(f"preview: {preview} (input left, model output right)")
    _, overlay, table = heatmap_paths(density)
    out.print(f"heat map: {density}, {overlay}, {table} ({mapped.tiles} patches, {mapped.seconds:.1f} s, "
              f"{mapped.megapixels_per_second:.2f} MP/s)")
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")
