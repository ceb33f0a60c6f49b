"""`tilecast export ...`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from tilecast.console import out, setup_logging, user_errors

app = typer.Typer(help="Export trained models into a model repository (needs the 'export' extra).",
                  no_args_is_help=True)


@app.command("onnx")
@user_errors
def onnx(
    checkpoint: Annotated[Path, typer.Argument(help="A tilecast checkpoint.pt.")],
    name: Annotated[str, typer.Option(help="Model name in the repository.")],
    repository: Annotated[Path, typer.Option(help="Model repository folder.")] = Path("models"),
    version: Annotated[int, typer.Option(help="Version to write; 0 = next free.")] = 0,
    tile_size: Annotated[int, typer.Option(help="Preferred tile core edge.")] = 512,
    description: Annotated[str, typer.Option()] = "",
    reproduce: Annotated[str, typer.Option(help="The command that reproduces this model, for the manifest.")] = "",
) -> None:
    """Export a generator checkpoint to ONNX (uint8 HWC in and out), check it, and add it as a new version."""
    from tilecast.export.onnx_export import ExportConfig, export_generator

    setup_logging("INFO")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    command = reproduce or shlex.join(["tilecast", "export", "onnx", *sys.argv[3:]])
    config = ExportConfig(checkpoint=checkpoint, repository=repository, name=name, version=version,
                          tile_size=tile_size, description=description, command=command)
    path = export_generator(config)
    out.print(f"exported: {path}")
