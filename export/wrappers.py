"""Per-pixel pre- and postprocessing baked around a float network, so engines take and return wire dtypes.

Every wrapper takes (N, H, W, C) uint8 or uint16 tiles, scales them to the network's training range
((x / full_range - mean) / std), runs the network in NCHW, and turns its output into what travels:
images for generators, labels (and optional probabilities) for segmenters, scores for classifiers.
"""

# No `from __future__ import annotations`: TorchScript reads these annotations at run time, and the
# wrappers are scripted around TorchScript networks.
import copy
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from tilecast.export.receptive_field import replace_global_layers

FULL_RANGE = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}  # float32 tiles arrive scaled to [0, 1]
TORCH_DTYPE = {"uint8": torch.uint8, "uint16": torch.uint16}


class _Normalise(nn.Module):
    """Fixed: (x / full_range - mean) / std. Percentile (when per-sample low and high arrive, shape (N, C)):
    ((x - low) / (high - low) - mean) / std, the image-global range sent in the stream header."""

    scale: torch.Tensor
    shift: torch.Tensor
    inv_std: torch.Tensor
    mean_over_std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], full_range: float) -> None:
        super().__init__()
        # (x/range - mean)/std == x * scale + shift
        self.register_buffer("scale", torch.tensor([1.0 / (full_range * s) for s in std]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1))
        self.register_buffer("inv_std", torch.tensor([1.0 / s for s in std]).view(1, -1, 1, 1))
        self.register_buffer("mean_over_std", torch.tensor([m / s for m, s in zip(mean, std, strict=True)]).view(
            1, -1, 1, 1))

    def forward(self, image: torch.Tensor, low: Optional[torch.Tensor] = None,  # noqa: UP045 (TorchScript)
                high: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        x = image.permute(0, 3, 1, 2).float()  # (N, H, W, C) int -> (N, C, H, W) float
        if low is None or high is None:
            return x * self.scale + self.shift
        low4, high4 = low[:, :, None, None], high[:, :, None, None]
        return (x - low4) / (high4 - low4) * self.inv_std - self.mean_over_std


class ImageGenerator(nn.Module):
    """(N, H, W, C_in) int -> (N, H, W, C_out) int around a [-1, 1] -> tanh generator."""

    def __init__(self, core: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_dtype: str = "uint8", output_dtype: str = "uint8") -> None:
        super().__init__()
        self.normalise = _Normalise(mean, std, FULL_RANGE[input_dtype])
        self.core = core
        self.out_half_range = FULL_RANGE[output_dtype] / 2
        self.out_max = FULL_RANGE[output_dtype]
        self.out_dtype = TORCH_DTYPE[output_dtype]

    def forward(self, image: torch.Tensor, low: Optional[torch.Tensor] = None,  # noqa: UP045
                high: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        y = self.core(self.normalise(image, low, high))
        y = torch.clamp(torch.round((y + 1.0) * self.out_half_range), 0.0, self.out_max)
        return y.to(self.out_dtype).permute(0, 2, 3, 1)


class _SegmenterBase(nn.Module):
    def __init__(self, core: nn.Module, mean: Sequence[float], std: Sequence[float], input_dtype: str = "uint8",
                 classes: int = 2) -> None:
        super().__init__()
        self.normalise = _Normalise(mean, std, FULL_RANGE[input_dtype])
        self.core = core
        self.label_dtype = torch.uint8 if classes <= 256 else torch.uint16


class Segmenter(_SegmenterBase):
    """(N, H, W, C) int -> labels (N, H, W, 1): the argmax class of each pixel."""

    def forward(self, image: torch.Tensor, low: Optional[torch.Tensor] = None,  # noqa: UP045
                high: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        logits = self.core(self.normalise(image, low, high))
        return torch.argmax(logits, dim=1, keepdim=True).to(self.label_dtype).permute(0, 2, 3, 1)


class SegmenterWithProbabilities(_SegmenterBase):
    """Labels as `Segmenter`, and per-class probabilities (N, H, W, K) scaled to uint8."""

    def forward(self, image: torch.Tensor, low: Optional[torch.Tensor] = None,  # noqa: UP045
                high: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: UP045
        logits = self.core(self.normalise(image, low, high))
        labels = torch.argmax(logits, dim=1, keepdim=True).to(self.label_dtype).permute(0, 2, 3, 1)
        probs = torch.round(torch.softmax(logits, dim=1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1)
        return labels, probs


class Classifier(nn.Module):
    """(N, H, W, C) int -> class probabilities (N, K) float32 for each patch."""

    def __init__(self, core: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_dtype: str = "uint8") -> None:
        super().__init__()
        self.normalise = _Normalise(mean, std, FULL_RANGE[input_dtype])
        self.core = core

    def forward(self, image: torch.Tensor, low: Optional[torch.Tensor] = None,  # noqa: UP045
                high: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        return torch.softmax(self.core(self.normalise(image, low, high)), dim=1)


class ImageOnly(nn.Module):
    """Calls a scripted wrapper with the image alone: the TorchScript-based ONNX exporter cannot pass
    None for the optional per-image parameters."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.inner(image)
        return y


class ImageOnlyTwoOutputs(ImageOnly):
    """`ImageOnly` for wrappers that answer with two tensors (labels and probabilities)."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        y: tuple[torch.Tensor, torch.Tensor] = self.inner(image)
        return y


class _KeepFloat32(nn.Module):
    """Runs one layer in float32 inside an fp16 network (instance norm's statistics need the range)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.layer(x.float())
        return y.to(x.dtype)


class Half(nn.Module):
    """The float core converted to fp16, image-global layers kept in fp32; float32 in and out."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = replace_global_layers(copy.deepcopy(core).half(), _KeepFloat32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.core(x.half())
        return y.float()
