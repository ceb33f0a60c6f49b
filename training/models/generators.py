"""Image-to-image generators with the module structure and state-dict keys of
pytorch-CycleGAN-and-pix2pix (https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix), so its
checkpoints load unchanged: `model.<i>` indices of one nn.Sequential, `conv_block.<j>` inside blocks,
and its rule that convolutions carry a bias only when the norm is instance norm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from tilecast.training.models.registry import register_model

NormLayer = Callable[[int], nn.Module]


def norm_layer(kind: str) -> NormLayer:
    """'batch', 'instance' or 'none', built the way the reference code builds them."""
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"norm {kind!r} is not one of batch, instance, none")


def _conv_bias(norm: str) -> bool:
    # The reference code gives convolutions a bias only under instance norm (none included: no bias).
    return norm == "instance"


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: NormLayer, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim), nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.conv_block(x)
        return x + residual


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, n residual blocks at 1/4 resolution, two upsamplings, tanh.

    Input edges must be multiples of 4.
    """

    size_multiple = 4
    task = "generator"

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "batch",
                 use_dropout: bool = False, n_blocks: int = 9) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), make_norm(ngf), nn.ReLU(True),
        ]
        for i in range(2):  # (N, ngf, H, W) -> (N, 4 ngf, H/4, W/4)
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, make_norm, use_dropout, bias) for _ in range(n_blocks)]
        for i in range(2):  # back to (N, ngf, H, W)
            c = ngf * 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                make_norm(c // 2), nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y


@register_model
def resnet_6blocks(**kwargs: object) -> nn.Module:
    return ResnetGenerator(n_blocks=6, **kwargs)  # type: ignore[arg-type]


@register_model
def resnet_9blocks(**kwargs: object) -> nn.Module:
    return ResnetGenerator(n_blocks=9, **kwargs)  # type: ignore[arg-type]


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: down (4x4 stride-2 conv), the inner levels, up (4x4 stride-2 transposed
    conv), and the input concatenated back (except at the outermost level)."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: NormLayer = nn.BatchNorm2d, use_dropout: bool = False, use_bias: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, norm(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, norm(inner_nc), submodule,
                      nn.ReLU(True), upconv, norm(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` stride-2 levels; input edges must be multiples of 2**num_downs."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        self.size_multiple = 2**num_downs
        self.task = "generator"
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=make_norm, use_bias=bias)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=make_norm,
                                            use_dropout=use_dropout, use_bias=bias)
        for outer in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * outer, ngf * outer * 2, submodule=block, norm=make_norm,
                                            use_bias=bias)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm=make_norm, use_bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y


@register_model
def unet_128(**kwargs: object) -> nn.Module:
    return UnetGenerator(num_downs=7, **kwargs)  # type: ignore[arg-type]


@register_model
def unet_256(**kwargs: object) -> nn.Module:
    return UnetGenerator(num_downs=8, **kwargs)  # type: ignore[arg-type]


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each over a patch of the (input, target) pair."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y
