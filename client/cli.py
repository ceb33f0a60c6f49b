"""`tilecast convert` and `tilecast models`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from tilecast.console import fail, out, user_errors
from tilecast.proto.errors import InvalidOption

if TYPE_CHECKING:
    from tilecast.client.archive import Job, Outcome
    from tilecast.client.channels import Security
    from tilecast.client.control import RepositoryControl
    from tilecast.client.options import Channels, ConvertOptions

ServerOption = Annotated[
    list[str], typer.Option("--server", "-s", envvar="TILECAST_SERVER", help=(
        "host:port of a server; repeat (or separate with commas) to spread tiles over several."))]
DEFAULT_SERVER = ["127.0.0.1:8500"]
TlsCaOption = Annotated[Path | None, typer.Option(
    "--tls-ca", help="CA (PEM) the server's certificate is signed by; turns TLS on (grpcs://host:port does too, "
                     "with the system's roots).")]
TlsCertOption = Annotated[Path | None, typer.Option("--tls-cert", help="Client certificate (PEM), for mutual TLS.")]
TlsKeyOption = Annotated[Path | None, typer.Option("--tls-key", help="Private key (PEM) of --tls-cert.")]
TokenFileOption = Annotated[Path | None, typer.Option(
    "--token-file", help="File whose first line is the bearer token (default: $TILECAST_TOKEN).")]


def security_of(tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None,
                token_file: Path | None) -> Security:
    """How the command reaches its servers, from its TLS and token options."""
    from tilecast.client.channels import Security, read_token

    return Security(ca=tls_ca, cert=tls_cert, key=tls_key, token=read_token(token_file))


def level_megapixels(path: Path, level: int, microns_per_pixel: float | None) -> float:
    """The size of the level convert will read, for the progress rate (0 when it cannot be read;
    convert reports why)."""
    from tilecast.client.metadata import level_for_resolution
    from tilecast.client.reader import ImageReadError, image_shape

    try:
        if microns_per_pixel:
            level = level_for_resolution(path, microns_per_pixel)
        height, width, _ = image_shape(path, level)
    except ImageReadError:
        return 0.0
    return height * width / 1e6


def parse_channels(text: str) -> Channels:
    """'0,2' or '0-6' or '1,3-4' -> channel indices in that order; 'gray' -> 'gray' (RGB to luminance)."""
    from tilecast.client.options import GRAY

    if text.strip().lower() == GRAY:
        return "gray"
    chosen: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        try:
            chosen.extend(range(int(first), int(last) + 1) if dash else [int(first)])
        except ValueError:
            raise InvalidOption("--channels", text, f"give indices like 0,2, ranges like 0-6, or {GRAY}") from None
    return tuple(chosen)


OUTPUT_SUFFIXES = {"tiff": ".tif", "ome-tiff": ".ome.tif"}
WRITABLE = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
FILE_LIKE = (*WRITABLE, ".btf", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".jp2", ".svs", ".ndpi")


def plan_outputs(inputs: list[str], output: Path, output_format: str) -> list[Job]:
    """What to write where: `output` is a folder (mirrored from the inputs), or one .tif/.ome.tif file for
    one input file. A file-like name that cannot be that is refused with what to give instead."""
    from tilecast.client.archive import GLOB_CHARS, Job, plan_jobs

    if output_format not in OUTPUT_SUFFIXES:
        raise InvalidOption("--format", output_format, f"use one of {', '.join(OUTPUT_SUFFIXES)}")
    name = output.name.lower()
    if output.is_dir() or not name.endswith(FILE_LIKE):
        jobs = plan_jobs(inputs, output, OUTPUT_SUFFIXES[output_format])
        if not jobs:
            raise ValueError(f"no images found in {', '.join(inputs)}")
        return jobs
    if not name.endswith(WRITABLE):
        raise InvalidOption("--output", str(output), "outputs are tiled TIFFs: give a .tif or .ome.tif name for "
                                                     "one input, or a folder")
    single = inputs[0] if len(inputs) == 1 else ""
    if not single or Path(single).is_dir() or GLOB_CHARS & set(single):
        given = f"{len(inputs)} inputs" if len(inputs) > 1 else f"{single} (a folder or pattern)"
        raise InvalidOption("--output", str(output), f"names one file, but {given} may hold several images: "
                                                     "give a folder")
    return [Job(Path(single), output)]


def convert_options(tile_size: int, halo: int, overlap: int, mpp: float, channels: str,
                    **fields: Any) -> ConvertOptions:
    """The command's flags as ConvertOptions (which checks them): 0 and -1 mean "the model's"."""
    from tilecast.client.options import ConvertOptions

    return ConvertOptions(tile_size=tile_size or None, halo=None if halo == -1 else halo,
                          overlap=None if overlap == -1 else overlap, microns_per_pixel=mpp or None,
                          channels=parse_channels(channels), **fields)


@user_errors
def convert(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders (recursive) or globs (quote them).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name on the server.")],
    output: Annotated[Path, typer.Option("--output", "-o", help=(
        "Output folder, or a .tif / .ome.tif file for one input."))] = Path("."),
    server: ServerOption = DEFAULT_SERVER,
    version: Annotated[int, typer.Option(min=0, help="Model version; 0 = newest.")] = 0,
    tile_size: Annotated[int, typer.Option(help="Tile core edge, a multiple of 16; 0 = the model's.")] = 0,
    halo: Annotated[int, typer.Option(help="Context per side; -1 = the model's measured halo.")] = -1,
    stitch: Annotated[str, typer.Option(
        help="crop (exact), blend (weighted average of overlapping tiles), or auto: blend where crop is not exact.")
    ] = "auto",
    blend_window: Annotated[str, typer.Option(help="Blend weights: gaussian or linear.")] = "gaussian",
    overlap: Annotated[int, typer.Option(help="Blend: pixels neighbouring tiles share; -1 = 2 x halo.")] = -1,
    window: Annotated[int, typer.Option(help="Tiles in flight (1 or more).")] = 32,
    tile_deadline_ms: Annotated[int, typer.Option(
        help="Resend a tile the server has not started within this many ms (0: no per-tile deadline).")] = 0,
    compression: Annotated[str, typer.Option(help="none, zlib, zstd, lzw or jpeg.")] = "zlib",
    level: Annotated[int, typer.Option(help="Pyramid level of the input to read.")] = 0,
    mpp: Annotated[float, typer.Option(
        help="Read the pyramid level nearest this many µm per pixel instead of --level (0: use --level).")] = 0.0,
    output_format: Annotated[str, typer.Option(
        "--format", help="For folders: tiff (tiled BigTIFF) or ome-tiff (pyramidal, .ome.tif).")] = "tiff",
    channels: Annotated[str, typer.Option(
        help="Input channels or z-planes to feed the model, e.g. 0,2 or 0-6, or gray: RGB to one luminance "
             "channel (default: all).")] = "",
    stride: Annotated[int, typer.Option(help="Classifiers: heat-map cell in pixels; 0 = the patch size.")] = 0,
    tissue_only: Annotated[bool, typer.Option(
        help="Classifiers: skip background (Otsu on saturation of a low-resolution view).")] = False,
    min_tissue: Annotated[float, typer.Option(help="Classifiers: tissue fraction a cell needs, 0 to 1.")] = 0.25,
    overwrite: Annotated[bool, typer.Option(help="Redo outputs that are already complete.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome of every file as JSON.")] = False,
    wait_s: Annotated[float, typer.Option(
        help="Seconds to wait for a server that answers but still loads its models (engine builds take "
             "minutes); one that does not answer at all fails after 10 s.")] = 300.0,
    shard: Annotated[str, typer.Option(envvar="TILECAST_SHARD", help=(
        "Convert part INDEX/COUNT of the files (0/4 .. 3/4: four runs, no file in two), or auto: the "
        "pod's JOB_COMPLETION_INDEX in a Kubernetes Indexed Job out of --shard-count."))] = "",
    shard_count: Annotated[int, typer.Option(envvar="TILECAST_SHARD_COUNT", help=(
        "Parts for --shard auto; with JOB_COMPLETION_INDEX set, it alone turns sharding on (0: off)."))] = 0,
    tls_ca: TlsCaOption = None, tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Run a model over whole images and write tiled BigTIFFs or pyramidal OME-TIFFs (-o x.ome.tif or
    --format ome-tiff); folders are mirrored, finished files skipped."""
    import os

    from tilecast.client.archive import convert_many, shard_jobs, shard_of
    from tilecast.client.remote import Client

    if not wait_s >= 0:
        raise InvalidOption("--wait-s", wait_s, "give the seconds to wait for a server still loading (0 or more)")
    options = convert_options(tile_size, halo, overlap, mpp, channels, stitch=stitch, blend_window=blend_window,
                              window=window, tile_deadline_ms=tile_deadline_ms, compression=compression,
                              level=level, stride=stride, tissue_only=tissue_only, min_tissue=min_tissue)
    part = shard_of(shard, shard_count, os.environ)
    jobs = shard_jobs(plan_outputs(inputs, output, output_format), part, output)
    security = security_of(tls_ca, tls_cert, tls_key, token_file)
    with Client(server, security=security) as client, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out, transient=not as_json,
        disable=as_json,
    ) as bar:
        client.wait_ready(timeout=wait_s, connect_timeout=10)
        overall = bar.add_task("all files", total=len(jobs), rate="")

        def on_file(job: Job) -> Callable[[int, int], None]:
            return file_progress(bar, overall, job, level_megapixels(job.source, level, mpp))

        outcomes = convert_many(client, model, jobs, options, version=version, resume=not overwrite, on_file=on_file)
    show_outcomes(model, outcomes, as_json)


def file_progress(bar: Progress, overall: TaskID, job: Job, megapixels: float) -> Callable[[int, int], None]:
    """A progress bar for one file, with its rate; removed when the file is done."""
    task = bar.add_task(job.source.name, total=None, rate="")
    started = time.perf_counter()

    def advance(done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - started, 1e-6)
        per_second = megapixels * done / total / elapsed
        rate = f"{per_second:.1f} MP/s" if megapixels else f"{done / elapsed:.1f} tiles/s"
        bar.update(task, completed=done, total=total, rate=rate)
        if done == total:
            bar.remove_task(task)
            bar.advance(overall)

    return advance


def show_outcomes(model: str, outcomes: list[Outcome], as_json: bool) -> None:
    """A table (or JSON) of what became of each file, its warnings, and exit status 1 if any failed."""
    from tilecast.client.archive import as_json as outcomes_json

    if as_json:
        out.print_json(outcomes_json(outcomes))
    else:
        table = Table("input", "output", "status", "MP", "s", "MP/s", title=f"model {model}")
        for o in outcomes:
            rate = f"{o.megapixels / o.seconds:.1f}" if o.seconds and o.megapixels else ""
            status = {"failed": "[red]failed", "skipped": "[dim]skipped"}.get(o.status, "[green]converted")
            table.add_row(o.source, o.output, status, f"{o.megapixels:.1f}" if o.megapixels else "",
                          f"{o.seconds:.1f}" if o.seconds else "", rate)
        out.print(table)
        for o in outcomes:
            for warning in o.warnings:  # e.g. a heat map in which no cell was tissue
                out.print(f"[yellow]warning:[/] {o.source}: {warning}", highlight=False, soft_wrap=True)
    failed = [o for o in outcomes if o.status == "failed"]
    if not as_json:
        for o in failed:
            out.print(f"[red]failed:[/] {o.message}", highlight=False, soft_wrap=True)
    if failed:
        raise fail(f"{len(failed)} of {len(outcomes)} file(s) failed", code=1)


models_app = typer.Typer(help="List a server's models; load and unload them under explicit model control.")


@models_app.callback(invoke_without_command=True)
@user_errors
def models(
    ctx: typer.Context,
    server: ServerOption = DEFAULT_SERVER,
    repository: Annotated[bool, typer.Option(
        "--repository", help="List every model in each server's repository, loaded or not.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON, for scripts.")] = False,
    tls_ca: TlsCaOption = None, tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """List the model versions a server serves or is loading, with their state (`--repository`: every model
    in its repository, loaded or not); `load` and `unload` change what it serves."""
    security = security_of(tls_ca, tls_cert, tls_key, token_file)
    ctx.obj = (server, security)
    if ctx.invoked_subcommand:
        return
    rows = repository_rows(server, security) if repository else model_rows(server, security)
    if as_json:
        out.print_json(data=rows)
        return
    table = Table(*rows[0]) if rows else Table("model")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    out.print(table)


def model_rows(server: list[str], security: Security) -> list[dict[str, Any]]:
    from tilecast.client.remote import Client
    from tilecast.proto.v1 import inference_pb2, manifest_pb2

    with Client(server, security=security) as client:
        client.wait_ready(timeout=10, until_serving=False)  # versions still loading are listed as such
        return [{"model": status.name, "version": status.version,
                 "kind": manifest_pb2.ModelKind.Name(status.kind).removeprefix("MODEL_KIND_").lower(),
                 "state": inference_pb2.ModelState.Name(status.state).removeprefix("MODEL_STATE_").lower(),
                 "reason": status.reason} for status in client.list_models()]


def repository_rows(servers: list[str], security: Security) -> list[dict[str, Any]]:
    """The index of each server's repository (a "server" column when there are several)."""
    from tilecast.client.addresses import server_list
    from tilecast.client.control import RepositoryControl

    servers = server_list(servers)
    rows: list[dict[str, Any]] = []
    for address in servers:
        with RepositoryControl(address, security=security) as control:
            rows += [{**({"server": address} if len(servers) > 1 else {}), "model": entry.name,
                      "version": entry.version or "-", "state": entry.state.lower(), "reason": entry.reason}
                     for entry in control.index()]
    return rows


ControlServerOption = Annotated[list[str] | None, typer.Option(
    "--server", "-s", help="host:port of a server; repeat for several (default: the one `tilecast models` names).")]


def on_each_server(ctx: typer.Context, servers: list[str] | None, security: Security,
                   request: Callable[[RepositoryControl], None], done: str) -> None:
    """Send one repository request to each server in turn (by default the servers, TLS and token given to
    `tilecast models`), saying "<server>: <done>" after each."""
    from tilecast.client.addresses import server_list
    from tilecast.client.control import RepositoryControl

    parent_servers, parent = ctx.obj
    # each option not given to load/unload: the one given to `tilecast models`
    security = dataclasses.replace(parent, **{k: v for k, v in vars(security).items() if v not in (None, False)})

    for address in server_list(servers or parent_servers):
        with RepositoryControl(address, security=security) as control:
            request(control)
        out.print(f"{address}: {done}", highlight=False)


@models_app.command("load")
@user_errors
def load(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model folder name in the server's repository.")],
    server: ControlServerOption = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the load (an engine build may take minutes); 0 waits until it ends.")] = 0.0,
    tls_ca: TlsCaOption = None, tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Load a model on servers started with --model-control explicit (reload it if its files changed);
    returns once it serves."""
    if timeout < 0:
        raise ValueError(f"--timeout {timeout:g}: give seconds, or 0 to wait until the load ends")
    on_each_server(ctx, server, security_of(tls_ca, tls_cert, tls_key, token_file),
                   lambda control: control.load(name, timeout=timeout or None), f"{name} loaded")


@models_app.command("unload")
@user_errors
def unload(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    server: ControlServerOption = None,
    tls_ca: TlsCaOption = None, tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Stop serving a model on servers started with --model-control explicit: new requests are refused,
    those in flight finish."""
    on_each_server(ctx, server, security_of(tls_ca, tls_cert, tls_key, token_file),
                   lambda control: control.unload(name), f"{name} unloaded")
