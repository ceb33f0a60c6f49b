"""`tilecast export onnx | tensorrt | inspect | verify`."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import fail, out, setup_logging, user_errors
from tilecast.proto.errors import InvalidOption

app = typer.Typer(help="Export trained models into a model repository and check them (needs the 'export' extra).",
                  no_args_is_help=True)


SOURCE_FORMATS = ("tilecast", "pix2pix", "module", "torchscript")
PIX2PIX_ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
NORMS = ("batch", "instance", "none")
KINDS = ("generator", "segmenter", "classifier")


def per_channel(option: str, text: str, channels: int, default: float) -> list[float]:
    """'0.5' or '0.485,0.456,0.406' -> one value per channel (one value is repeated)."""
    try:
        values = [float(v) for v in text.split(",")] if text else [default]
    except ValueError:
        raise InvalidOption(option, text, "give one number, or one per input channel, comma-separated") from None
    if len(values) not in (1, channels) or not all(math.isfinite(v) for v in values):
        raise InvalidOption(option, text, f"give one finite number, or {channels} (one per input channel)")
    if option == "--std" and min(values) <= 0:
        raise InvalidOption(option, text, "standard deviations must be greater than 0")
    return values * channels if len(values) == 1 else values


def factory_kwargs(text: str) -> dict[str, Any]:
    """--module-kwargs as a dict, or what to give."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise InvalidOption("--module-kwargs", text, 'give a JSON object, e.g. \'{"depth": 4}\'')
    return kwargs


def check_choices(**given: tuple[str, tuple[str, ...]]) -> None:
    """Each `flag_name=(value, allowed)`; the first value not allowed is refused with the choices."""
    for flag, (value, allowed) in given.items():
        if value not in allowed:
            raise InvalidOption(f"--{flag.replace('_', '-')}", value, f"use one of {', '.join(allowed)}")


@app.command("onnx")
@user_errors
def onnx(
    source: Annotated[Path, typer.Argument(help="Checkpoint, state dict or TorchScript file.")],
    name: Annotated[str, typer.Option(help="Model name in the repository.")],
    repository: Annotated[Path, typer.Option(help="Model repository folder.")] = Path("models"),
    source_format: Annotated[str, typer.Option(
        "--format", help="tilecast (a `tilecast train` checkpoint), pix2pix (a pytorch-CycleGAN-and-pix2pix "
                         "generator), module (--module + state dict) or torchscript.")] = "tilecast",
    arch: Annotated[str, typer.Option(help="pix2pix: resnet_9blocks, resnet_6blocks, unet_256, unet_128.")] = (
        "resnet_9blocks"),
    norm: Annotated[str, typer.Option(help="pix2pix: batch, instance or none.")] = "instance",
    ngf: Annotated[int, typer.Option(min=1, help="pix2pix: generator width.")] = 64,
    dropout: Annotated[bool, typer.Option(help="pix2pix: the generator was built with dropout.")] = False,
    module: Annotated[str, typer.Option(help="module: package.module:Factory.")] = "",
    module_kwargs: Annotated[str, typer.Option(help="module: JSON keyword arguments for the factory.")] = "{}",
    kind: Annotated[str, typer.Option(help="module/torchscript: generator, segmenter or classifier.")] = "generator",
    input_nc: Annotated[int, typer.Option(min=1, help="Input channels (pix2pix, module, torchscript).")] = 3,
    output_nc: Annotated[int, typer.Option(
        min=1, help="Output channels or classes (pix2pix, module, torchscript).")] = 3,
    mean: Annotated[str, typer.Option(help="module/torchscript: per-channel mean on [0, 1] (one value or C).")] = "0.5",
    std: Annotated[str, typer.Option(help="module/torchscript: per-channel std on [0, 1].")] = "0.5",
    size_multiple: Annotated[int, typer.Option(
        min=1, help="module/torchscript: input edges must be multiples of this.")] = 1,
    version: Annotated[int, typer.Option(help="Version to write; 0 = next free.")] = 0,
    tile_size: Annotated[int, typer.Option(help="Preferred tile core edge.")] = 512,
    max_size: Annotated[int, typer.Option(help="Largest input edge the server will accept.")] = 2048,
    input_dtype: Annotated[str, typer.Option(help="uint8, uint16 or float32 (scaled to [0, 1]) tiles in.")] = "uint8",
    output_dtype: Annotated[str, typer.Option(help="Generators: uint8 or uint16 images out.")] = "uint8",
    probabilities: Annotated[bool, typer.Option(help="Segmenters: also return class probabilities.")] = False,
    classes: Annotated[str, typer.Option(help="Class names, comma-separated.")] = "",
    fp16: Annotated[bool, typer.Option(help="Also write model.fp16.onnx with its own parity figures.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    description: Annotated[str, typer.Option()] = "",
    reproduce: Annotated[str, typer.Option(help="The command that reproduces this model, for the manifest.")] = "",
) -> None:
    """Export a network to ONNX (wire dtypes in and out), check it, and add it as a new version."""
    from tilecast.export import sources
    from tilecast.export.onnx_export import ExportConfig, export_model

    check_choices(format=(source_format, SOURCE_FORMATS), arch=(arch, PIX2PIX_ARCHS), norm=(norm, NORMS),
                  kind=(kind, KINDS))
    means, stds = per_channel("--mean", mean, input_nc, 0.5), per_channel("--std", std, input_nc, 0.5)
    kwargs = factory_kwargs(module_kwargs) if source_format == "module" else {}
    command = reproduce or shlex.join(["tilecast", "export", "onnx", *sys.argv[3:]])
    config = ExportConfig(  # checks its settings before any network is loaded
        repository=repository, name=name, version=version, tile_size=tile_size, max_size=max_size, opset=opset,
        input_dtype=input_dtype, output_dtype=output_dtype, probabilities=probabilities,
        class_names=tuple(c.strip() for c in classes.split(",") if c.strip()), fp16=fp16,
        description=description, command=command)
    setup_logging("INFO")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    if source_format == "tilecast":
        loaded = sources.from_checkpoint(source)
    elif source_format == "pix2pix":
        loaded = sources.from_pix2pix(source, arch, norm, input_nc, output_nc, ngf, dropout)
    elif source_format == "module":
        loaded = sources.from_import_path(module, source, kwargs, kind, input_nc, output_nc, means, stds,
                                          size_multiple)
    else:
        loaded = sources.from_torchscript(source, kind, input_nc, output_nc, means, stds, size_multiple)
    from tilecast.training.data.validation import validation_inputs

    real = validation_inputs(loaded.kind, loaded.training.get("config", {}))  # the checkpoint's own data
    path = export_model(loaded, config, real)
    out.print(f"exported: {path}")


@app.command("tensorrt")
@user_errors
def tensorrt(
    version_dir: Annotated[Path, typer.Argument(help="A version folder, e.g. models/ihc-colorize/1.")],
    fp16: Annotated[bool, typer.Option(help="Build an fp16 engine.")] = False,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache file to reuse and update.")] = None,
    hardware_compatible: Annotated[bool, typer.Option(help="Build for all Ampere and newer GPUs.")] = False,
) -> None:
    """Build a TensorRT engine for this GPU from the version's ONNX model, and record it."""
    from tilecast.export.tensorrt_export import build_plan

    setup_logging("INFO")
    path = build_plan(version_dir, fp16, timing_cache, hardware_compatible)
    out.print(f"engine: {path}")


@app.command("inspect")
@user_errors
def inspect(version_dir: Annotated[Path, typer.Argument(help="A version folder.")]) -> None:
    """Print a version's manifest as a table."""
    from rich.table import Table

    from tilecast.export.verify import describe
    from tilecast.proto import manifest as manifest_io

    table = Table("field", "value", show_header=False)
    for field, value in describe(manifest_io.read_manifest(version_dir / manifest_io.MANIFEST_FILE)):
        table.add_row(field, value)
    out.print(table)


@app.command("verify")
@user_errors
def verify(version_dirs: Annotated[list[Path], typer.Argument(help="Version folders to check.")]) -> None:
    """Re-check checksums and re-run the recorded parity probe; exit 1 on tampering or drift."""
    from tilecast.export.verify import verify as check

    problems = [p for version_dir in version_dirs for p in check(version_dir)]
    if problems:
        for problem in problems:
            out.print(f"[red]FAILED[/] {problem}", highlight=False)
        raise fail(f"{len(problems)} problem(s) in {len(version_dirs)} version(s)")
    out.print(f"[green]ok[/] {len(version_dirs)} version(s): checksums match, parity probe reproduced")
