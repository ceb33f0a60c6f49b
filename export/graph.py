"""A network into an ONNX graph with dynamic batch and image edges, and the portable optimisation of it.

Used by export (the wrapped network) and by the parity checks (the float core alone).
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilecast.proto.spec import RANGE_INPUT_NAMES

INPUT_NAME = "image"
PARAMETER_NAMES = RANGE_INPUT_NAMES  # per-image percentile range, shape (N, C), float32


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, *, opset: int, multiple: int,
                 max_size: int, output_names: list[str], layout: str, scripted: bool = False,
                 parameters: int = 0) -> None:
    """Dynamic batch, height and width; height and width are declared as multiples of `multiple`.
    With `parameters` channels, two more (N, C) float32 inputs carry each image's percentile range."""
    extra = tuple(torch.zeros(example.shape[0], parameters) + k for k in (0.0, 255.0)) if parameters else ()
    input_names = [INPUT_NAME, *PARAMETER_NAMES[:len(extra)]]
    with warnings.catch_warnings():
        # torch's exporter trips over its own deprecations; nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="no signature found", category=UserWarning)
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)  # shared batch axis
        h_axis, w_axis = (1, 2) if layout == "NHWC" else (2, 3)
        if scripted:  # TorchScript goes through the TorchScript-based exporter
            axes = {0: "batch", h_axis: "height", w_axis: "width"}
            batch_only = {n: {0: "batch"} for n in [*input_names[1:], *output_names]}
            torch.onnx.export(module, (example, *extra), str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes={INPUT_NAME: axes, **batch_only})
            return
        batch = torch.export.Dim("batch", min=1, max=1024)
        h = torch.export.Dim("h_cells", min=2, max=max(2, max_size // multiple))
        w = torch.export.Dim("w_cells", min=2, max=max(2, max_size // multiple))
        arg_names = _forward_arg_names(module)
        shapes: dict[str, Any] = {arg_names[0]: {0: batch, h_axis: multiple * h, w_axis: multiple * w}}
        shapes.update({name: {0: batch} for name in arg_names[1:1 + len(extra)]})
        program = torch.onnx.export(
            module, (example, *extra), dynamo=True, external_data=False, opset_version=opset, verbose=False,
            input_names=input_names, output_names=output_names, dynamic_shapes=shapes,
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path), external_data=False)


def _forward_arg_names(module: nn.Module) -> list[str]:
    return [p for p in inspect.signature(module.forward).parameters if p != "self"]


def save_basic_optimised(path: Path) -> None:
    """Replace the graph with ONNX Runtime's BASIC-level optimisation of it (constant folding, redundant
    node removal): portable across machines and execution providers, unlike the higher levels."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    optimised = path.with_suffix(".basic.onnx")
    options.optimized_model_filepath = str(optimised)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(optimised, path)
