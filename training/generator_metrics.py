"""Validation of image generators: whole validation images through the network in eval mode."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tilecast.training.data.images import Region
from tilecast.training.data.paired import to_tensor, whole
from tilecast.training.metrics import psnr, ssim


@torch.no_grad()
def validate_generator(generator: nn.Module, inputs: list[Region], targets: list[Region],
                       device: torch.device) -> dict[str, float]:
    """L1 (in the [-1, 1] range), PSNR and SSIM (in the target's units), averaged over images."""
    generator.eval()
    multiple = int(getattr(generator, "size_multiple", 1))
    l1, psnrs, ssims = [], [], []
    for source, reference in zip(inputs, targets, strict=True):
        a, b = whole(source), whole(reference)
        h, w = (a.shape[0] // multiple) * multiple, (a.shape[1] // multiple) * multiple
        fake = generator(to_tensor(a[:h, :w])[None].to(device))[0].float().cpu()
        real = to_tensor(b[:h, :w])
        l1.append(float((fake - real).abs().mean()))
        scale = 65535.0 if b.dtype == np.uint16 else 255.0
        fake_image = ((fake.permute(1, 2, 0).numpy() + 1) / 2 * scale).clip(0, scale)
        real_image = b[:h, :w].astype(np.float64)
        psnrs.append(psnr(fake_image, real_image, scale))
        ssims.append(ssim(fake_image, real_image, scale))
    generator.train()
    return {"val_l1": float(np.mean(l1)), "val_psnr_db": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}


def image_grid(generator: nn.Module, inputs: list[Region], targets: list[Region], device: torch.device,
               side: int = 256) -> torch.Tensor:
    """(3, 3, side, side) in [0, 1]: input, output and target of the first validation image."""
    with torch.no_grad():
        generator.eval()
        multiple = int(getattr(generator, "size_multiple", 1))
        side = max(multiple, min(side, *inputs[0].shape[:2]) // multiple * multiple)
        a = to_tensor(inputs[0][slice(0, side), slice(0, side)])
        b = to_tensor(targets[0][slice(0, side), slice(0, side)])
        fake = generator(a[None].to(device))[0].float().cpu()
        generator.train()
    rgb = [t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3] for t in (a, fake, b)]
    return torch.stack([(t + 1) / 2 for t in rgb]).clamp(0, 1)
