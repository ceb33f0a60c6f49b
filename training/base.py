"""What every training loop shares: a small model base class (`set_input`, `optimize_parameters`,
`validate`), and `run`, which drives it step by step with deterministic data order, checkpoints that
resume exactly, TensorBoard scalars and images, mixed precision on CUDA and DistributedDataParallel
under `torchrun`.

Data order: sample i of step s on rank r is dataset index ((s - 1) * world + r) * batch + i, and every
dataset draws its randomness from (seed, index); so a resumed run sees what the uninterrupted one would.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tilecast.training.checks import check_config

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
Progress = Callable[[int, int, dict[str, float]], None]  # (step, steps, losses)


@dataclass(frozen=True)
class LoopConfig:
    """Fields every loop has; each loop's config adds its own."""

    data: str = ""
    out: str = "runs/model"
    arch: str = ""
    ngf: int = 16
    norm: str = "batch"
    steps: int = 500
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default
    checkpoint_every: int = 0  # steps between checkpoints (0 = only at the end)
    log_every: int = 10  # steps between TensorBoard scalars
    tensorboard: bool = True
    amp: bool = True  # mixed precision, on CUDA only
    device: str = "auto"  # auto, cpu, cuda

    TASK: ClassVar[str] = ""  # what the loop's architecture must be for: generator, segmenter, classifier

    def __post_init__(self) -> None:
        check_config(self, self.TASK)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """Rank and world size as `torchrun` sets them; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(wanted: str, dist: Distributed) -> torch.device:
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device("cuda", dist.local_rank)


class TrainingModel(abc.ABC):
    """One loop's networks, optimizers and step (after pytorch-CycleGAN-and-pix2pix's BaseModel).

    `networks` maps names to modules (wrapped for DDP by `run`); `exported` names the one network a
    checkpoint offers for export, with its architecture and constructor arguments.
    """

    kind: str  # generator, segmenter or classifier

    def __init__(self, config: LoopConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def autocast(self) -> AbstractContextManager[Any]:
        if self.scaler.is_enabled():
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def backward_and_step(self, loss: torch.Tensor, optimizer: str) -> None:
        self.optimizers[optimizer].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(self.optimizers[optimizer])

    @abc.abstractmethod
    def dataset(self) -> torch.utils.data.Dataset[Any]:
        """Training samples indexed by a global sample index (deterministic per index)."""

    @abc.abstractmethod
    def set_input(self, batch: Any) -> None: ...

    @abc.abstractmethod
    def optimize_parameters(self) -> dict[str, float]:
        """One step on the current batch; returns the losses to show."""

    @abc.abstractmethod
    def validate(self) -> dict[str, float]:
        """Metrics on the validation data (networks in eval mode, then back to train mode)."""

    @abc.abstractmethod
    def exported(self) -> tuple[str, dict[str, Any], nn.Module]:
        """(architecture, constructor kwargs, network) of what export turns into a model."""

    def describe(self) -> dict[str, Any]:
        """What export records: normalization, training data, classes."""
        return {}

    def sample_images(self) -> torch.Tensor | None:
        """A (N, 3, H, W) grid in [0, 1] for TensorBoard, or None."""
        return None

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        del state


def unwrap(module: nn.Module) -> nn.Module:
    inner = getattr(module, "module", module)
    return inner if isinstance(inner, nn.Module) else module


def _indices(start: int, steps: int, batch: int, dist: Distributed) -> Iterator[int]:
    for step in range(start, steps):
        first = (step * dist.world + dist.rank) * batch
        yield from range(first, first + batch)


def _save(model: TrainingModel, step: int, metrics: dict[str, float], dist: Distributed, path: Path) -> None:
    arch, kwargs, network = model.exported()
    payload = {
        "kind": model.kind, "arch": arch, "model_kwargs": kwargs, "state_dict": unwrap(network).state_dict(),
        "config": dataclasses.asdict(model.config), "step": step, "metrics": metrics, "world_size": dist.world,
        **model.describe(),
        "resume": {
            "networks": {name: unwrap(n).state_dict() for name, n in model.networks.items()},
            "optimizers": {name: o.state_dict() for name, o in model.optimizers.items()},
            "scaler": model.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "extra": model.extra_state(),
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def _resume(model: TrainingModel, path: Path) -> int:
    ckpt = torch.load(path, map_location=model.device, weights_only=True)
    saved, current = dict(ckpt["config"]), dataclasses.asdict(model.config)
    changed = {k for k in current if k not in ("steps", "checkpoint_every", "log_every", "tensorboard")
               and saved.get(k) != current[k]}
    if changed:
        raise ValueError(f"cannot resume {path}: the config differs in {sorted(changed)}; "
                         f"resume with the same settings (only --steps may grow)")
    state = ckpt["resume"]
    for name, network in model.networks.items():
        unwrap(network).load_state_dict(state["networks"][name])
    for name, optimizer in model.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    model.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"].cpu())
    model.load_extra_state(state["extra"])
    return int(ckpt["step"])


def run(model: TrainingModel, dist: Distributed, resume: bool = False, progress: Progress | None = None) -> Path:
    """Train `model` to `config.steps`, writing <out>/checkpoint.pt (rank 0); returns its path."""
    config = model.config
    out = Path(config.out)
    path = out / CHECKPOINT
    start = 0
    if resume:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        start = _resume(model, path)
        log.info("resumed %s at step %d of %d", path, start, config.steps)
    if dist.world > 1:
        for name, network in model.networks.items():
            ids = [model.device.index] if model.device.type == "cuda" else None
            model.networks[name] = nn.parallel.DistributedDataParallel(network, device_ids=ids)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    writer = _tensorboard(out, start) if config.tensorboard and dist.main else None
    loader = torch.utils.data.DataLoader(model.dataset(), batch_size=config.batch_size,
                                         sampler=list(_indices(start, config.steps, config.batch_size, dist)))
    started = time.perf_counter()
    step = start
    for step, batch in enumerate(loader, start=start + 1):
        model.set_input(batch)
        losses = model.optimize_parameters()
        model.scaler.update()
        if writer is not None and (step % config.log_every == 0 or step == config.steps):
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value, step)
        if progress and dist.main:
            progress(step, config.steps, losses)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps and dist.main:
            _save(model, step, {}, dist, path)
    model.networks = {name: unwrap(network) for name, network in model.networks.items()}  # no collectives now
    metrics: dict[str, float] = {}
    if dist.main:
        metrics = model.validate()
        metrics["train_seconds"] = time.perf_counter() - started
        _save(model, step, metrics, dist, path)
        if writer is not None:
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, step)
            grid = model.sample_images()
            if grid is not None:
                writer.add_images("val/samples", grid, step)
            writer.close()
        log.info("saved %s at step %d: %s", path, step, {k: round(v, 4) for k, v in metrics.items()})
    checksum = sum(float(p.detach().double().sum()) for n in model.networks.values() for p in n.parameters())
    log.info("rank %d of %d finished at step %d; parameter checksum %.10g", dist.rank, dist.world, step, checksum)
    return path


def launch(make: Callable[[Any, torch.device], TrainingModel], config: LoopConfig, progress: Progress | None = None,
           resume: bool = False, dist: Distributed | None = None) -> Path:
    """Seed, set threads, build the loop's model on its device and `run` it; returns the checkpoint path."""
    dist = dist or Distributed()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    return run(make(config, pick_device(config.device, dist)), dist, resume, progress)


def tanh_normalization(channels: int) -> dict[str, Any]:
    """Generators see inputs in [-1, 1] and answer through tanh, as pix2pix and CycleGAN train."""
    return {"mode": "fixed", "mean": [0.5] * channels, "std": [0.5] * channels, "output": "tanh"}


def _tensorboard(out: Path, start: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard is not installed; no event files (pip install tensorboard)")
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=start or None)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents (weights and metadata; no code is unpickled)."""
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint
