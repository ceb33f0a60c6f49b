"""pix2pix: a generator G learns input -> target with L1 plus a conditional PatchGAN loss
(Isola et al. 2017; defaults after pytorch-CycleGAN-and-pix2pix).

Reads top to bottom: config, the model (networks, one optimisation step, validation), train().
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilecast.training.base import Distributed, LoopConfig, Progress, TrainingModel, launch, tanh_normalization
from tilecast.training.data.paired import RandomPairCrops, load_paired
from tilecast.training.generator_metrics import image_grid, validate_generator
from tilecast.training.losses import GanLoss
from tilecast.training.models import create_model
from tilecast.training.models.generators import PatchDiscriminator


@dataclass(frozen=True)
class Pix2PixConfig(LoopConfig):
    TASK = "generator"
    data: str = "skimage:ihc"  # or a folder with A/ and B/, or side-by-side AB images (train/, val/ inside)
    out: str = "runs/pix2pix"
    arch: str = "resnet_6blocks"
    norm: str = "batch"  # batch (folded at export) keeps tiles independent; instance does not
    use_dropout: bool = False
    ndf: int = 32
    n_layers_d: int = 3
    steps: int = 600
    beta1: float = 0.5
    lambda_l1: float = 100.0
    lambda_gan: float = 1.0  # 0 trains G on L1 alone and skips the discriminator
    gan_mode: str = "lsgan"  # lsgan or vanilla


class Pix2Pix(TrainingModel):
    kind = "generator"

    def __init__(self, config: Pix2PixConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.cfg = config
        self.train_pairs, self.val_pairs = load_paired(config.data, "train"), load_paired(config.data, "val")
        in_c, out_c = self.train_pairs.channels
        self.model_kwargs: dict[str, Any] = {"input_nc": in_c, "output_nc": out_c, "ngf": config.ngf,
                                             "norm": config.norm, "use_dropout": config.use_dropout}
        self.networks["G"] = create_model(config.arch, **self.model_kwargs).to(device)
        betas = (config.beta1, 0.999)
        self.optimizers["G"] = torch.optim.Adam(self.networks["G"].parameters(), lr=config.lr, betas=betas)
        if config.lambda_gan > 0:
            self.networks["D"] = PatchDiscriminator(in_c + out_c, config.ndf, config.n_layers_d, config.norm).to(device)
            self.optimizers["D"] = torch.optim.Adam(self.networks["D"].parameters(), lr=config.lr, betas=betas)
        self.gan_loss = GanLoss(config.gan_mode)

    def dataset(self) -> RandomPairCrops:
        return RandomPairCrops(self.train_pairs, self.cfg.crop, self.cfg.seed)

    def set_input(self, batch: Any) -> None:
        self.real_a, self.real_b = (t.to(self.device) for t in batch)  # (N, in_c, crop, crop), (N, out_c, ...)

    def optimize_parameters(self) -> dict[str, float]:
        cfg, losses = self.cfg, {}
        with self.autocast():
            fake_b = self.networks["G"](self.real_a)
        if cfg.lambda_gan > 0:
            # D: real pairs -> real, fake pairs -> fake
            with self.autocast():
                pred_fake = self.networks["D"](torch.cat([self.real_a, fake_b.detach()], 1))
                pred_real = self.networks["D"](torch.cat([self.real_a, self.real_b], 1))
                loss_d = 0.5 * (self.gan_loss(pred_fake, False) + self.gan_loss(pred_real, True))
            self.backward_and_step(loss_d, "D")
            losses["d"] = loss_d.item()
        # G: stay close to the target and (with a discriminator) fool it
        with self.autocast():
            loss_l1 = nn.functional.l1_loss(fake_b, self.real_b)
            loss_g = cfg.lambda_l1 * loss_l1
            if cfg.lambda_gan > 0:
                loss_g = loss_g + cfg.lambda_gan * self.gan_loss(
                    self.networks["D"](torch.cat([self.real_a, fake_b], 1)), True)
        self.backward_and_step(loss_g, "G")
        losses.update(g=loss_g.item(), l1=loss_l1.item())
        return losses

    def validate(self) -> dict[str, float]:
        return validate_generator(self.networks["G"], self.val_pairs.inputs, self.val_pairs.targets, self.device)

    def sample_images(self) -> torch.Tensor:
        return image_grid(self.networks["G"], self.val_pairs.inputs, self.val_pairs.targets, self.device)

    def exported(self) -> tuple[str, dict[str, Any], nn.Module]:
        return self.cfg.arch, self.model_kwargs, self.networks["G"]

    def describe(self) -> dict[str, Any]:
        in_c = self.model_kwargs["input_nc"]
        return {"normalization": tanh_normalization(in_c), "training_data": self.train_pairs.description}


def train(config: Pix2PixConfig, progress: Progress | None = None, resume: bool = False,
          dist: Distributed | None = None) -> Path:
    """Train and write <out>/checkpoint.pt; returns its path."""
    return launch(Pix2Pix, config, progress, resume, dist)
