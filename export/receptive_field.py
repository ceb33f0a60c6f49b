"""Measure what a network's output pixels depend on: receptive radius, and image-global operations."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

GLOBAL_MODULES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.AdaptiveAvgPool2d,
                  nn.AdaptiveMaxPool2d, nn.GroupNorm, nn.LayerNorm)
GLOBAL_NAMES = {cls.__name__ for cls in GLOBAL_MODULES}


def _is_global(module: nn.Module) -> bool:
    # Scripted modules keep their Python class name in `original_name`.
    return isinstance(module, GLOBAL_MODULES) or getattr(module, "original_name", "") in GLOBAL_NAMES


def has_global_ops(model: nn.Module) -> bool:
    """True when some layer mixes statistics over the whole tile (instance norm, adaptive pooling...),
    so a tile's output depends on content beyond any halo. Batch norm in eval mode is per-pixel."""
    return any(_is_global(m) for m in model.modules())


def replace_global_layers(model: nn.Module, replacement: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Swap every image-global layer of `model`, in place, for `replacement(layer)`; returns `model`."""
    for name, module in list(model.named_modules()):
        if name and _is_global(module):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, replacement(module))
    return model


def _local_copy(model: nn.Module) -> nn.Module:
    """A copy with image-global layers replaced by identity, leaving the convolutional reach to measure."""
    probe = copy.deepcopy(model)
    if isinstance(probe, torch.jit.ScriptModule):
        return probe
    return replace_global_layers(probe, lambda layer: nn.Identity())


def _phases(size_multiple: int) -> list[int]:
    """Output positions inside one size-multiple cell to probe: all of them when few, else the edges
    and the middle (strided layers make the reach depend on the phase)."""
    if size_multiple <= 8:
        return list(range(size_multiple))
    return sorted({0, 1, size_multiple // 2, size_multiple - 2, size_multiple - 1})


def measure_receptive_radius(model: nn.Module, in_channels: int, size_multiple: int,
                             trials: int = 0, size: int = 0) -> int:
    """Largest distance (per side, in pixels) from an output pixel to an input pixel it depends on.

    Gradients of single output pixels with respect to random inputs, in eval mode, over several inputs
    and output phases. Image-global layers are set aside (their reach is the whole image; see
    `has_global_ops`). Raises ValueError if the reach touches the probe's border.
    """
    probe = _local_copy(model).eval()
    size = size or max(256, 8 * size_multiple)
    trials = trials or (3 if size_multiple <= 8 else 1)  # large multiples: many phases, large probes
    # Zero gradients are structural, so float32 finds the same reach; float64 only rules out underflow.
    # Scripted modules stay as they are (converting their parameters trips torch's own warnings).
    scripted = isinstance(probe, torch.jit.ScriptModule)
    dtype = torch.float64 if size <= 512 and not scripted else torch.float32
    probe = probe if scripted else probe.to(dtype)
    centre = (size // 2) // size_multiple * size_multiple
    generator = torch.Generator().manual_seed(0)
    reach = 0
    phases = _phases(size_multiple)
    for _ in range(trials):
        x = torch.randn(1, in_channels, size, size, dtype=dtype, generator=generator, requires_grad=True)
        y = probe(x)
        for dy in phases:
            for dx in phases:
                (grad,) = torch.autograd.grad(y[0, :, centre + dy, centre + dx].sum(), x, retain_graph=True)
                touched = grad[0].abs().sum(0).nonzero()
                if touched.numel() == 0:
                    continue
                rows, cols = touched[:, 0], touched[:, 1]
                if rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1:
                    raise ValueError(f"receptive field reaches the {size}px probe's border; the network has "
                                     "global reach or needs a larger probe")
                reach = max(reach, int(centre + dy - rows.min()), int(rows.max() - centre - dy),
                            int(centre + dx - cols.min()), int(cols.max() - centre - dx))
    return reach
