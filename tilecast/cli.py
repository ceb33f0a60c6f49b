"""The `tilecast` command, composed from each component's own command module.

Command modules import their heavy dependencies inside the commands, so `tilecast --help` works
with any subset of extras installed.
"""

from __future__ import annotations

import typer

from tilecast import bench, bench_convert, bench_monai, demo
from tilecast.client import cli as client_cli
from tilecast.client.evaluate import cli as evaluate_cli
from tilecast.console import out
from tilecast.export import cli as export_cli
from tilecast.server import cli as server_cli
from tilecast.training import cli as training_cli
from tilecast.version import __version__

app = typer.Typer(
    name="tilecast", no_args_is_help=True, pretty_exceptions_enable=False,
    help="Run trained image models on microscopy and pathology images of any size.",
)
app.command("serve")(server_cli.serve)
app.command("convert")(client_cli.convert)
app.command("demo")(demo.demo)
app.command("bench")(bench.bench)
app.command("bench-convert")(bench_convert.bench_convert)
app.command("bench-monai")(bench_monai.bench_monai)
app.add_typer(client_cli.models_app, name="models")
app.add_typer(training_cli.app, name="train")
app.add_typer(export_cli.app, name="export")
app.add_typer(evaluate_cli.app, name="evaluate")


@app.command("version")
def version() -> None:
    """Print the installed tilecast version."""
    out.print(__version__)


if __name__ == "__main__":
    app()
