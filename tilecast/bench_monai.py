"""`tilecast bench-monai`: the same model on the same large image through tilecast and through MONAI.

tilecast: `tilecast serve` with the model repository and `tilecast convert` as separate processes.
MONAI: `scripts/monai_sliding_window.py` in an environment of its own (torch + monai; see
`scripts/bench_monai.sh`), running the same ONNX file through ONNX Runtime with the same thread count
inside `sliding_window_inference`, with windows as large as tilecast's tiles plus halo and an overlap
of twice the halo. Each side is timed from process start to a finished output file, and its peak
resident memory is read from the kernel (`wait4`; the server's from /proc before it stops).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import out, user_errors
from tilecast.local import child_process, free_port, serve_command, timed_child

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "monai_sliding_window.py"


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def difference(a: Path, b: Path) -> tuple[float, float]:
    """Mean and 99.9th percentile absolute difference of two same-shaped images, read block by block."""
    import numpy as np

    from tilecast.client.reader import open_image
    from tilecast.client.tiling import Box

    first, second = open_image(a), open_image(b)
    height, width, _ = first.shape
    total, count, histogram = 0.0, 0, np.zeros(256, np.int64)
    for y in range(0, height, 1024):
        box = Box(y, min(y + 1024, height), 0, width)
        diff = np.abs(first.read(box).astype(np.int16) - second.read(box).astype(np.int16))
        total, count = total + float(diff.sum()), count + diff.size
        histogram += np.bincount(diff.ravel(), minlength=256)[:256]
    first.close()
    second.close()
    p999 = int(np.searchsorted(np.cumsum(histogram), 0.999 * count))
    return total / count, float(p999)


@user_errors
def bench_monai(
    monai_python: Annotated[Path, typer.Option(help="Python of an environment with torch, monai, onnxruntime.")],
    repository: Annotated[Path, typer.Option(help="Model repository.")] = Path("models"),
    model: Annotated[str, typer.Option(help="Model to run (a generator).")] = "ihc-colorize",
    size: Annotated[int, typer.Option(min=512, help="Edge of the input image in pixels.")] = 8192,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime threads on both sides; 0 = all cores.")] = 0,
    workdir: Annotated[Path | None, typer.Option(help="Where to build the input and outputs.")] = None,
) -> None:
    """Wall time and peak memory, tilecast vs MONAI sliding_window_inference, on one large image."""
    from rich.table import Table

    from tilecast.demo import build_input

    manifest = json.loads((repository / model / "1" / "manifest.json").read_text())
    tiling = manifest["tiling"]
    tile, halo = int(tiling["tile_size"]), int(tiling["halo"])
    channels = int(manifest["inputs"][0]["channels"])
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        source = root / "input.tif"
        out.print(f"building a {size}x{size} input...")
        build_input(source, size, colour=channels == 3)
        port = free_port()
        with child_process(serve_command(repository, port, "--threads", str(threads))) as server:
            from tilecast.client.remote import Client

            with Client(f"127.0.0.1:{port}") as client:
                client.wait_ready(timeout=120)
            out.print("tilecast convert...")
            ours_s, ours_rss, _ = timed_child(
                [sys.executable, "-m", "tilecast", "convert", str(source), "-m", model, "-s", f"127.0.0.1:{port}",
                 "-o", str(root / "tilecast.tif"), "--json", "--overwrite"])
            server_rss = peak_rss_mb(server.pid)
        out.print("MONAI sliding_window_inference...")
        roi = tile + 2 * halo
        monai_s, monai_rss, report = timed_child(
            [str(monai_python), str(WORKER), str(source), str(root / "monai.tif"),
             str(repository / model / "1" / "model.onnx"), "--roi", str(roi), "--overlap", f"{2 * halo / roi:.6f}",
             "--threads", str(threads), "--tile", str(tile)])
        monai_parts: dict[str, Any] = json.loads(report.strip().splitlines()[-1])
        mean_diff, p999_diff = difference(root / "tilecast.tif", root / "monai.tif")
    table = Table("", "wall s", "peak RSS MB", title=f"{model}, {size}x{size}, {threads} engine threads each")
    table.add_row("tilecast (client + server)", f"{ours_s:.1f}", f"{ours_rss:.0f} + {server_rss:.0f}")
    table.add_row("MONAI sliding_window_inference", f"{monai_s:.1f}", f"{monai_rss:.0f}")
    out.print(table)
    out.print(f"wall ratio tilecast / MONAI: {ours_s / monai_s:.2f} (target <= 1.0)")
    out.print(f"peak RSS ratio, client / MONAI: {ours_rss / monai_rss:.3f}; "
              f"client + server / MONAI: {(ours_rss + server_rss) / monai_rss:.3f} (target <= 0.25)")
    out.print(f"MONAI time: read {monai_parts['read_s']:.1f} s, inference {monai_parts['infer_s']:.1f} s; "
              f"output difference: mean {mean_diff:.3f}, 99.9th percentile {p999_diff:.0f} grey levels "
              "(MONAI averages overlapping windows; tilecast keeps each tile's core)")
