"""U-Net segmenter: per-pixel class logits for N classes (Ronneberger et al. 2015, with batch norm and
padded convolutions so the output has the input's size)."""

from __future__ import annotations

import torch
from torch import nn

from tilecast.training.models.generators import norm_layer
from tilecast.training.models.registry import register_model


def _double_conv(in_c: int, out_c: int, norm: str) -> nn.Sequential:
    make_norm = norm_layer(norm)
    return nn.Sequential(
        nn.Conv2d(in_c, out_c, 3, padding=1, bias=norm == "none"), make_norm(out_c), nn.ReLU(True),
        nn.Conv2d(out_c, out_c, 3, padding=1, bias=norm == "none"), make_norm(out_c), nn.ReLU(True),
    )


class UNetSegmenter(nn.Module):
    """`depth` 2x poolings, widths ngf * 2**level; input edges must be multiples of 2**depth."""

    task = "segmenter"

    def __init__(self, input_nc: int = 1, output_nc: int = 2, ngf: int = 16, depth: int = 4, norm: str = "batch",
                 use_dropout: bool = False) -> None:
        super().__init__()
        if output_nc < 2:
            raise ValueError(f"a segmenter needs at least 2 classes (background and one more), got {output_nc}")
        self.size_multiple = 2**depth
        widths = [ngf * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(input_nc, widths[0], norm)])
        self.down.extend(_double_conv(widths[i], widths[i + 1], norm) for i in range(depth))
        self.dropout = nn.Dropout(0.5) if use_dropout else nn.Identity()
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.up = nn.ModuleList(_double_conv(2 * widths[i], widths[i], norm) for i in range(depth))
        self.head = nn.Conv2d(widths[0], output_nc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes, H, W) logits
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = self.dropout(skips.pop())
        for level in reversed(range(len(self.up))):
            x = self.up[level](torch.cat([skips.pop(), self.upsample[level](x)], 1))
        logits: torch.Tensor = self.head(x)
        return logits


@register_model
def unet_segmenter(**kwargs: object) -> nn.Module:
    return UNetSegmenter(**kwargs)  # type: ignore[arg-type]


@register_model
def unet_segmenter_small(**kwargs: object) -> nn.Module:
    """Three levels: a 8-pixel size multiple and a smaller receptive field (cheaper halo)."""
    return UNetSegmenter(depth=3, **kwargs)  # type: ignore[arg-type]
