"""`tilecast convert` and `tilecast models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from tilecast.console import out, user_errors

ServerOption = Annotated[
    list[str], typer.Option("--server", "-s", envvar="TILECAST_SERVER",
                            help="host:port of a server; repeat to spread tiles over several.")]
DEFAULT_SERVER = ["127.0.0.1:8500"]


def output_path_for(source: Path, output: Path, many: bool) -> Path:
    """A single input may name its output file; several inputs go into the output folder."""
    if not many and output.suffix.lower() in (".tif", ".tiff"):
        return output
    return output / f"{source.stem}.tif"


@user_errors
def convert(
    inputs: Annotated[list[Path], typer.Argument(help="Images to convert (TIFF, SVS, OME-TIFF, PNG, JPEG).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name on the server.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .tif file, or folder.")] = Path("."),
    server: ServerOption = DEFAULT_SERVER,
    version: Annotated[int, typer.Option(help="Model version; 0 = newest.")] = 0,
    tile_size: Annotated[int, typer.Option(help="Tile core edge; 0 = the model's.")] = 0,
    halo: Annotated[int, typer.Option(help="Context per side; -1 = the model's measured halo.")] = -1,
    window: Annotated[int, typer.Option(help="Tiles in flight.")] = 32,
    compression: Annotated[str, typer.Option(help="none, zlib, zstd, lzw or jpeg.")] = "zlib",
    level: Annotated[int, typer.Option(help="Pyramid level of the input to read.")] = 0,
) -> None:
    """Run a model over whole images and write tiled BigTIFFs."""
    from tilecast.client.convert import ConvertOptions, convert_image
    from tilecast.client.remote import Client

    options = ConvertOptions(tile_size=tile_size or None, halo=None if halo < 0 else halo,
                             window=window, compression=compression, level=level)
    with Client(server) as client, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tiles"),
        TimeRemainingColumn(), console=out, transient=False,
    ) as bar:
        client.wait_ready(timeout=10)
        for source in inputs:
            task = bar.add_task(source.name, total=None)

            def advance(done: int, total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done, total=total)

            result = convert_image(
                client, model, source, output_path_for(source, output, len(inputs) > 1), options,
                version=version, progress=advance,
            )
            bar.console.print(
                f"{result.input} -> {result.output}: {result.shape[1]}x{result.shape[0]}, "
                f"{result.tiles} tiles, {result.seconds:.1f} s ({result.megapixels_per_second:.1f} MP/s)"
            )


@user_errors
def models(server: ServerOption = DEFAULT_SERVER) -> None:
    """List the models a server has, with their state."""
    from tilecast.client.remote import Client
    from tilecast.proto.v1 import inference_pb2, manifest_pb2

    with Client(server) as client:
        client.wait_ready(timeout=10)
        table = Table("model", "version", "kind", "state", "reason")
        for status in client.list_models():
            kind = manifest_pb2.ModelKind.Name(status.kind).removeprefix("MODEL_KIND_").lower()
            state = inference_pb2.ModelState.Name(status.state).removeprefix("MODEL_STATE_").lower()
            table.add_row(status.name, str(status.version), kind, state, status.reason)
        out.print(table)
