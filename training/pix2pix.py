"""pix2pix: a generator G learns input -> target with L1 plus a conditional PatchGAN loss.

Reads top to bottom: config, data, models, the loop, validation, checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilecast.training.data.paired import PairedImages, RandomPairCrops, load_paired, to_tensor
from tilecast.training.models import create_model
from tilecast.training.models.generators import PatchDiscriminator

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Pix2PixConfig:
    data: str = "skimage:ihc"  # or a folder with A/ and B/ (optionally train/ and val/ inside)
    out: str = "runs/pix2pix"
    arch: str = "resnet_6blocks"
    ngf: int = 16
    norm: str = "batch"  # batch (folded at export) keeps tiles independent; instance does not
    ndf: int = 32
    crop: int = 128
    batch_size: int = 8
    steps: int = 600
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0
    lambda_gan: float = 1.0  # 0 trains G on L1 alone and skips the discriminator
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default


def _psnr(mse: float) -> float:
    return 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")  # signals in [-1, 1]: peak-to-peak 2


@torch.no_grad()
def validate(generator: nn.Module, pairs: PairedImages) -> dict[str, float]:
    """L1 and PSNR of whole validation images (in [-1, 1] units), in eval mode."""
    generator.eval()
    l1, mse, pixels = 0.0, 0.0, 0
    for a, b in zip(pairs.inputs, pairs.targets, strict=True):
        h, w = (a.shape[0] // 4) * 4, (a.shape[1] // 4) * 4
        fake = generator(to_tensor(a[:h, :w])[None])
        real = to_tensor(b[:h, :w])[None]
        l1 += float((fake - real).abs().sum())
        mse += float(((fake - real) ** 2).sum())
        pixels += real.numel()
    generator.train()
    return {"val_l1": l1 / pixels, "val_psnr_db": _psnr(mse / pixels)}


def train(config: Pix2PixConfig, progress: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train and write <out>/checkpoint.pt; returns its path."""
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    train_pairs, val_pairs = load_paired(config.data, "train"), load_paired(config.data, "val")
    in_c, out_c = train_pairs.channels
    crops = RandomPairCrops(train_pairs, config.crop, config.steps * config.batch_size, config.seed)
    loader = torch.utils.data.DataLoader(crops, batch_size=config.batch_size, shuffle=False)

    model_kwargs: dict[str, Any] = {"input_nc": in_c, "output_nc": out_c, "ngf": config.ngf, "norm": config.norm}
    generator = create_model(config.arch, **model_kwargs)
    discriminator = PatchDiscriminator(in_c + out_c, config.ndf, norm=config.norm)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas)
    gan_loss = nn.MSELoss()  # LSGAN
    started = time.perf_counter()

    for step, (real_a, real_b) in enumerate(loader, start=1):  # (N, in_c, crop, crop), (N, out_c, crop, crop)
        fake_b = generator(real_a)
        losses: dict[str, float] = {}
        if config.lambda_gan > 0:
            # D: real pairs -> 1, fake pairs -> 0
            opt_d.zero_grad()
            pred_fake = discriminator(torch.cat([real_a, fake_b.detach()], 1))
            pred_real = discriminator(torch.cat([real_a, real_b], 1))
            loss_d = 0.5 * (gan_loss(pred_fake, torch.zeros_like(pred_fake))
                            + gan_loss(pred_real, torch.ones_like(pred_real)))
            loss_d.backward()
            opt_d.step()
            losses["d"] = loss_d.item()
        # G: fool D, stay close to the target
        opt_g.zero_grad()
        loss_l1 = nn.functional.l1_loss(fake_b, real_b)
        loss_g = config.lambda_l1 * loss_l1
        if config.lambda_gan > 0:
            pred = discriminator(torch.cat([real_a, fake_b], 1))
            loss_g = loss_g + config.lambda_gan * gan_loss(pred, torch.ones_like(pred))
        loss_g.backward()  # type: ignore[no-untyped-call]
        opt_g.step()
        losses.update(g=loss_g.item(), l1=loss_l1.item())
        if progress:
            progress(step, losses)

    metrics = validate(generator, val_pairs)
    metrics["train_seconds"] = time.perf_counter() - started
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    torch.save({
        "kind": "generator",
        "arch": config.arch,
        "model_kwargs": model_kwargs,
        "state_dict": generator.state_dict(),
        "config": dataclasses.asdict(config),
        "normalization": {"mean": [0.5] * in_c, "std": [0.5] * in_c, "output": "tanh"},
        "metrics": metrics,
        "training_data": train_pairs.description,
        "step": config.steps,
    }, path)
    log.info("saved %s: %s", path, {k: round(v, 4) for k, v in metrics.items()})
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint
