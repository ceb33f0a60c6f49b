"""Does the exported graph compute what the PyTorch network does? Figures recorded in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from tilecast.export.graph import export_graph

Array = npt.NDArray[Any]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def float_core(core: nn.Module, in_channels: int, multiple: int, scratch: Path, opset: int,
               scripted: bool) -> dict[str, float]:
    """The float network alone, exported and compared on random input: max absolute difference."""
    path = scratch / "core.check.onnx"
    side = max(2, -(-64 // multiple)) * multiple
    example = torch.randn(2, in_channels, side, side, generator=torch.Generator().manual_seed(1))
    try:
        export_graph(core, example, path, opset=opset, multiple=multiple, max_size=max(4 * side, 2 * multiple),
                     output_names=["output"], layout="NCHW", scripted=scripted)
        probe = torch.randn(2, in_channels, side + multiple, side, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            expected = core(probe).numpy()
        got = _session(path).run(None, {"image": probe.numpy()})[0]
    finally:
        path.unlink(missing_ok=True)
    return {"fp32_core_max_abs_diff": float(np.abs(got - expected).max())}


Feeds = dict[str, Array]  # graph input name -> array; the image first, then any per-image parameters


def wire(wrapper: nn.Module, path: Path, inputs: list[Feeds]) -> dict[str, float]:
    """The wrapped graph on wire dtypes: integer outputs differ by at most a level on few values."""
    session = _session(path)
    worst, differing, total, float_worst = 0.0, 0, 0, 0.0
    for feeds in inputs:
        with torch.no_grad():
            expected = wrapper(*(torch.from_numpy(a) for a in feeds.values()))
        expected_list = list(expected) if isinstance(expected, tuple) else [expected]
        got_list = session.run(None, feeds)
        for want, got in zip(expected_list, got_list, strict=True):
            want_np = want.numpy()
            if np.issubdtype(want_np.dtype, np.integer):
                diff = np.abs(got.astype(np.int64) - want_np.astype(np.int64))
                worst = max(worst, float(diff.max()))
                differing += int((diff > 0).sum())
                total += diff.size
            else:
                float_worst = max(float_worst, float(np.abs(got - want_np).max()))
    figures = {"float_output_max_abs_diff": float_worst} if float_worst else {}
    if total:
        figures.update({"int_max_abs_diff": worst, "int_fraction_differing": differing / total})
    return figures


def save_probe(path: Path, onnx_path: Path, feeds: Feeds) -> None:
    """Inputs and the exported graph's answer to them, so `verify` can detect drift later."""
    outputs = _session(onnx_path).run(None, feeds)
    arrays: dict[str, Any] = {f"feed_{k}": v for k, v in feeds.items()}
    arrays.update({f"output_{i}": o for i, o in enumerate(outputs)})
    np.savez_compressed(path, **arrays)


def check_probe(probe_path: Path, onnx_path: Path, input_name: str) -> list[str]:
    """Re-run the stored probe; problems (empty when the answers still match)."""
    with np.load(probe_path) as stored:
        feeds = {k.removeprefix("feed_"): stored[k] for k in stored.files if k.startswith("feed_")}
        if "input" in stored.files:  # probes written before per-image parameters existed
            feeds = {input_name: stored["input"]}
        outputs = sorted((k for k in stored.files if k.startswith("output_")), key=lambda k: int(k[7:]))
        expected = [stored[k] for k in outputs]
    got = _session(onnx_path).run(None, feeds)
    problems = []
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want.shape != have.shape:
            problems.append(f"output {i}: shape {have.shape}, recorded {want.shape}")
        elif np.issubdtype(want.dtype, np.integer):
            diff = np.abs(have.astype(np.int64) - want.astype(np.int64))
            if diff.max() > 1 or (diff > 0).mean() > 1e-3:
                problems.append(f"output {i}: {int((diff > 0).sum())} values drifted, by up to {int(diff.max())}")
        elif np.abs(have - want).max() > 1e-4:
            problems.append(f"output {i}: drifted by up to {float(np.abs(have - want).max()):.2e}")
    return problems
