"""`tilecast bench-convert`: the client pipeline against a plain tifffile copy, and its memory at two sizes.

With a no-op model, converting a tiled zlib RGB BigTIFF into the same format through client and server
is compared with reading and writing that file with tifffile alone; the client runs as its own process
so its peak resident memory can be read (Linux `wait4`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import int_list, out, user_errors
from tilecast.local import child_process, free_port, serve_command, timed_child
from tilecast.proto.errors import InvalidOption

TILE = 512


def plain_copy(source: Path, target: Path, compression: str) -> float:
    """Seconds to read every tile with tifffile (through its zarr store) and write them again with tifffile,
    one after the other on one thread: a plain copy, as round 1 measured it (no project code in it)."""
    import numpy as np
    import tifffile
    import zarr

    started = time.perf_counter()
    with tifffile.TiffFile(source) as tif:
        page: Any = tif.pages[0]
        array: Any = zarr.open_array(tif.series[0].aszarr(), mode="r")
        height, width = array.shape[:2]
        tiles = (np.asarray(array[y:y + TILE, x:x + TILE])
                 for y in range(0, height, TILE) for x in range(0, width, TILE))
        tifffile.imwrite(target, data=tiles, shape=array.shape, dtype=array.dtype, tile=(TILE, TILE),
                         photometric=page.photometric, planarconfig="contig", maxworkers=1, bigtiff=True,
                         compression=None if compression == "none" else compression, metadata=None)
    return time.perf_counter() - started


def client_run(source: Path, target: Path, address: str, compression: str, stitch: str) -> dict[str, Any]:
    """`tilecast convert` as a child process: its own timing and its peak RSS."""
    command = [sys.executable, "-m", "tilecast", "convert", str(source), "-m", "identity", "-s", address,
               "-o", str(target), "--compression", compression, "--json", "--overwrite", "--stitch", stitch,
               "--overlap", "128"]
    _, peak_mb, stdout = timed_child(command)
    outcome = json.loads(stdout)[0]
    return {"seconds": outcome["seconds"], "peak_rss_mb": peak_mb}


@user_errors
def bench_convert(
    sizes: Annotated[str, typer.Option(help="Image edges to measure, comma-separated.")] = "8192",
    compression: Annotated[str, typer.Option(help="Compression of input and output.")] = "zlib",
    stitch: Annotated[str, typer.Option(help="crop, or blend (with a 128 px overlap).")] = "crop",
    workdir: Annotated[Path | None, typer.Option(help="Where to build the inputs (several GB for 32k).")] = None,
) -> None:
    """No-op pipeline throughput vs a tifffile copy, and client peak memory, per image size."""
    from rich.table import Table

    from tilecast.client.options import ConvertOptions
    from tilecast.demo import build_input
    from tilecast.export.identity import write_identity_model

    edges = int_list("--sizes", sizes, minimum=TILE)
    ConvertOptions(compression=compression, stitch=stitch)  # checks both
    if stitch not in ("crop", "blend"):
        raise InvalidOption("--stitch", stitch, "use crop or blend")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        write_identity_model(root / "models", channels=3, tile_size=TILE)
        port = free_port()
        rows = []
        with child_process(serve_command(root / "models", port)):
            from tilecast.client.remote import Client

            with Client(f"127.0.0.1:{port}") as client:
                client.wait_ready(timeout=60)
            for edge in edges:
                source = root / f"in-{edge}.tif"
                out.print(f"building a {edge}x{edge} RGB input...")
                build_input(source, edge, colour=True, compression=compression)
                out.print("copying it with tifffile...")
                copy_s = plain_copy(source, root / f"copy-{edge}.tif", compression)
                (root / f"copy-{edge}.tif").unlink()
                out.print("converting it through the server...")
                run = client_run(source, root / f"out-{edge}.tif", f"127.0.0.1:{port}", compression, stitch)
                (root / f"out-{edge}.tif").unlink()
                source.unlink()
                rows.append({"edge": edge, "copy_s": copy_s, **run, "ratio": copy_s / run["seconds"]})
    table = Table("image", "tifffile copy s", "pipeline s", "copy / pipeline", "client peak RSS MB",
                  title=f"no-op model, tiled {compression} RGB BigTIFF, {TILE}px tiles, {stitch} stitching")
    for r in rows:
        table.add_row(f"{r['edge']}x{r['edge']}", f"{r['copy_s']:.1f}", f"{r['seconds']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['peak_rss_mb']:.0f}")
    out.print(table)
    if len(rows) > 1:
        out.print(f"peak RSS ratio {rows[-1]['edge']} vs {rows[0]['edge']}: "
                  f"{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
