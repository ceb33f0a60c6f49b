"""Per-pixel pre- and postprocessing baked around a float network, so engines take and return wire dtypes.

uint8 NHWC in -> scaled to the network's range, NCHW -> network -> tanh range back to uint8 NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Uint8ImageGenerator(nn.Module):
    """(N, H, W, C_in) uint8 -> (N, H, W, C_out) uint8 around a [-1, 1] -> tanh generator."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, core: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.core = core
        # (x/255 - mean)/std == x * scale + shift
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() * self.scale + self.shift
        y = self.core(x)
        y = torch.clamp(torch.round((y + 1.0) * 127.5), 0.0, 255.0)
        return y.to(torch.uint8).permute(0, 2, 3, 1)
