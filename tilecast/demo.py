"""`tilecast demo`: the whole flow once, on the bundled model and a real 4096x4096 slide-like image.

Builds the input from scikit-image's immunohistochemistry sample, starts `tilecast serve` on
localhost, converts the image through it, writes the output TIFF and a side-by-side preview PNG,
then stops the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from tilecast.console import console, out, user_errors
from tilecast.local import child_process, free_port, serve_command

MODEL = "ihc-colorize"
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


@user_errors
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the input, output and preview.")] = Path("demo-output"),
    repository: Annotated[Path, typer.Option(help="Model repository.")] = Path("models"),
    size: Annotated[int, typer.Option(help="Edge of the generated input image in pixels.")] = 4096,
) -> None:
    """Run the end-to-end demo: build a 4096x4096 input, serve, convert, preview."""
    from PIL import Image
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from tilecast.client import Client, convert_image
    from tilecast.client.thumbnail import side_by_side, thumbnail

    if not (repository / MODEL).is_dir():
        raise FileNotFoundError(f"{repository / MODEL} is missing; run the demo from the repository root")
    output.mkdir(parents=True, exist_ok=True)
    source, result_path, preview = output / "ihc-gray.tif", output / "ihc-colorized.tif", output / "preview.png"
    started = time.perf_counter()
    build_input(source, size)
    out.print(f"input: {source} ({size}x{size} grayscale, {time.perf_counter() - started:.1f} s to build)")

    port = free_port()
    with child_process(serve_command(repository, port), quiet=False) as server, \
            Client(f"127.0.0.1:{port}") as client:
        client.wait_ready(timeout=60)
        if server.poll() is not None:
            raise RuntimeError("the server exited at start; see its messages above")
        with Progress(TextColumn("converting"), BarColumn(), TextColumn("{task.completed}/{task.total} tiles"),
                      TimeRemainingColumn(), console=out) as bar:
            task = bar.add_task("convert", total=None)
            result = convert_image(client, MODEL, source, result_path,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
    Image.fromarray(side_by_side(thumbnail(source, 1024), thumbnail(result_path, 1024))).save(preview)
    out.print(f"output: {result.output} ({result.tiles} tiles, {result.seconds:.1f} s, "
              f"{result.megapixels_per_second:.2f} MP/s through the server)")
    out.print(f"preview: {preview} (input left, model output right)")
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")
