"""CycleGAN: two generators G_A: A -> B and G_B: B -> A trained with adversarial, cycle-consistency and
identity losses on unpaired images (Zhu et al. 2017; names and defaults after pytorch-CycleGAN-and-pix2pix,
whose D_A judges domain B and D_B judges domain A). Export takes G_A.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tilecast.training.base import Distributed, LoopConfig, Progress, TrainingModel, launch, tanh_normalization
from tilecast.training.data.paired import to_tensor, whole
from tilecast.training.data.unpaired import RandomUnpairedCrops, load_unpaired
from tilecast.training.losses import GanLoss
from tilecast.training.models import create_model
from tilecast.training.models.generators import PatchDiscriminator


@dataclass(frozen=True)
class CycleGanConfig(LoopConfig):
    TASK = "generator"
    data: str = ""  # folder with trainA/ trainB/ (testA/ testB/)
    out: str = "runs/cyclegan"
    arch: str = "resnet_6blocks"
    norm: str = "batch"
    use_dropout: bool = False
    ndf: int = 32
    n_layers_d: int = 3
    batch_size: int = 1
    beta1: float = 0.5
    lambda_a: float = 10.0  # cycle A -> B -> A
    lambda_b: float = 10.0  # cycle B -> A -> B
    lambda_identity: float = 0.5  # relative to the cycle weights; used when A and B have the same channels
    gan_mode: str = "lsgan"
    pool_size: int = 50


class ImagePool:
    """A history of generated images (Shrivastava et al. 2017): D sees a mix of new and older fakes.
    Its randomness comes from torch's generator, so a resumed run draws what the uninterrupted one would."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        chosen = []
        for sample in batch.detach():
            image = sample[None]
            if len(self.images) < self.size:
                self.images.append(image)
                chosen.append(image)
            elif float(torch.rand(1)) > 0.5:
                k = int(torch.randint(0, self.size, (1,)))
                chosen.append(self.images[k].clone())
                self.images[k] = image
            else:
                chosen.append(image)
        return torch.cat(chosen)


class CycleGan(TrainingModel):
    kind = "generator"

    def __init__(self, config: CycleGanConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.cfg = config
        if not config.data:
            raise ValueError("CycleGAN needs --data: a folder with trainA/ and trainB/")
        self.train_images, self.val_images = load_unpaired(config.data, "train"), load_unpaired(config.data, "val")
        a_c, b_c = self.train_images.channels
        common = {"ngf": config.ngf, "norm": config.norm, "use_dropout": config.use_dropout}
        self.model_kwargs: dict[str, Any] = {"input_nc": a_c, "output_nc": b_c, **common}
        self.networks["G_A"] = create_model(config.arch, **self.model_kwargs).to(device)
        self.networks["G_B"] = create_model(config.arch, input_nc=b_c, output_nc=a_c, **common).to(device)
        self.networks["D_A"] = PatchDiscriminator(b_c, config.ndf, config.n_layers_d, config.norm).to(device)
        self.networks["D_B"] = PatchDiscriminator(a_c, config.ndf, config.n_layers_d, config.norm).to(device)
        betas = (config.beta1, 0.999)
        generators = [*self.networks["G_A"].parameters(), *self.networks["G_B"].parameters()]
        discriminators = [*self.networks["D_A"].parameters(), *self.networks["D_B"].parameters()]
        self.optimizers["G"] = torch.optim.Adam(generators, lr=config.lr, betas=betas)
        self.optimizers["D"] = torch.optim.Adam(discriminators, lr=config.lr, betas=betas)
        self.gan_loss = GanLoss(config.gan_mode)
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)
        self.identity = config.lambda_identity > 0 and a_c == b_c

    def dataset(self) -> RandomUnpairedCrops:
        return RandomUnpairedCrops(self.train_images, self.cfg.crop, self.cfg.seed)

    def set_input(self, batch: Any) -> None:
        self.real_a, self.real_b = (t.to(self.device) for t in batch)

    def optimize_parameters(self) -> dict[str, float]:
        cfg, net = self.cfg, self.networks
        l1 = nn.functional.l1_loss
        # G_A and G_B: fool both discriminators, reconstruct through the cycle, leave the other domain alone
        with self.autocast():
            fake_b, fake_a = net["G_A"](self.real_a), net["G_B"](self.real_b)
            rec_a, rec_b = net["G_B"](fake_b), net["G_A"](fake_a)
            loss_gan = self.gan_loss(net["D_A"](fake_b), True) + self.gan_loss(net["D_B"](fake_a), True)
            loss_cycle = cfg.lambda_a * l1(rec_a, self.real_a) + cfg.lambda_b * l1(rec_b, self.real_b)
            loss_g = loss_gan + loss_cycle
            if self.identity:
                loss_idt = (cfg.lambda_b * l1(net["G_A"](self.real_b), self.real_b)
                            + cfg.lambda_a * l1(net["G_B"](self.real_a), self.real_a)) * cfg.lambda_identity
                loss_g = loss_g + loss_idt
        self.backward_and_step(loss_g, "G")
        # D_A and D_B: real -> real, pooled fakes -> fake
        with self.autocast():
            halves = [0.5 * (self.gan_loss(net[d](real), True) + self.gan_loss(net[d](fake), False))
                      for d, real, fake in (("D_A", self.real_b, self.pool_b.query(fake_b)),
                                            ("D_B", self.real_a, self.pool_a.query(fake_a)))]
            loss_d = halves[0] + halves[1]
        self.backward_and_step(loss_d, "D")
        return {"g_gan": loss_gan.item(), "cycle": loss_cycle.item(), "d": loss_d.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Cycle L1 (in [-1, 1]) of whole validation images of each domain: A -> B -> A and B -> A -> B."""
        net = self.networks
        metrics = {}
        for name, images, there, back in (("a", self.val_images.domain_a, "G_A", "G_B"),
                                          ("b", self.val_images.domain_b, "G_B", "G_A")):
            for g in (there, back):
                net[g].eval()
            multiple = int(getattr(net[there], "size_multiple", 1))
            errors = []
            for image in images:
                pixels = whole(image)
                h, w = pixels.shape[0] // multiple * multiple, pixels.shape[1] // multiple * multiple
                real = to_tensor(pixels[:h, :w])[None].to(self.device)
                errors.append(float((net[back](net[there](real)) - real).abs().mean()))
            for g in (there, back):
                net[g].train()
            metrics[f"val_cycle_l1_{name}"] = float(np.mean(errors))
        return metrics

    def exported(self) -> tuple[str, dict[str, Any], nn.Module]:
        return self.cfg.arch, self.model_kwargs, self.networks["G_A"]

    def describe(self) -> dict[str, Any]:
        in_c = self.model_kwargs["input_nc"]
        return {"normalization": tanh_normalization(in_c), "training_data": self.train_images.description}

    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.images, "pool_b": self.pool_b.images}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool_a.images, self.pool_b.images = list(state["pool_a"]), list(state["pool_b"])


def train(config: CycleGanConfig, progress: Progress | None = None, resume: bool = False,
          dist: Distributed | None = None) -> Path:
    """Train and write <out>/checkpoint.pt; returns its path."""
    return launch(CycleGan, config, progress, resume, dist)
