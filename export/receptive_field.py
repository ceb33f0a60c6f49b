"""Measure what a network's output pixels depend on: receptive radius, size multiple, global operations."""

from __future__ import annotations

import copy

import torch
from torch import nn

GLOBAL_MODULES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.AdaptiveAvgPool2d,
                  nn.AdaptiveMaxPool2d, nn.GroupNorm, nn.LayerNorm)


def has_global_ops(model: nn.Module) -> bool:
    """True when some layer mixes statistics over the whole tile (instance norm, adaptive pooling...),
    so a tile's output depends on content far beyond any halo. Batch norm in eval mode is per-pixel."""
    return any(isinstance(m, GLOBAL_MODULES) for m in model.modules())


def measure_receptive_radius(model: nn.Module, in_channels: int, size_multiple: int,
                             trials: int = 3, size: int = 0) -> int:
    """Largest distance (per side, in pixels) from an output pixel to an input pixel it depends on.

    Gradients of single output pixels with respect to a random input, taken in float64 in eval mode,
    over several inputs and the pixel positions of one size-multiple cell (strided layers make the
    reach depend on a pixel's phase). Raises ValueError if the field reaches the probe's border,
    which means the probe was too small or the network has global reach.
    """
    probe = copy.deepcopy(model).double().eval()
    size = size or max(256, 8 * size_multiple)
    centre = (size // 2) // size_multiple * size_multiple
    generator = torch.Generator().manual_seed(0)
    reach = 0
    for _ in range(trials):
        x = torch.randn(1, in_channels, size, size, dtype=torch.float64, generator=generator, requires_grad=True)
        y = probe(x)
        for dy in range(size_multiple):
            for dx in range(size_multiple):
                (grad,) = torch.autograd.grad(y[0, :, centre + dy, centre + dx].sum(), x, retain_graph=True)
                touched = grad[0].abs().sum(0).nonzero()
                if touched.numel() == 0:
                    continue
                rows, cols = touched[:, 0], touched[:, 1]
                if rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1:
                    raise ValueError(
                        f"receptive field reaches the {size}px probe's border; the network may be global"
                    )
                reach = max(reach, int(centre + dy - rows.min()), int(rows.max() - centre - dy),
                            int(centre + dx - cols.min()), int(cols.max() - centre - dx))
    return reach
