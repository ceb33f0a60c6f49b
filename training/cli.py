"""`tilecast train pix2pix|cyclegan|segmenter|classifier`: one command per loop.

Settings come from the loop's defaults, then `--config` TOML files, then the flags below, then `--set
key=value` for any other field. Under `torchrun` each process trains its share (DistributedDataParallel).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import out, setup_logging, user_errors

app = typer.Typer(help="Train models (needs the 'train' extra: PyTorch).", no_args_is_help=True)

ConfigFiles = Annotated[list[Path] | None, typer.Option("--config", help="TOML override file (repeatable).")]
Data = Annotated[str | None, typer.Option(help="Training data: a folder or a built-in source.")]
OutDir = Annotated[Path | None, typer.Option("--out", help="Folder for checkpoint.pt and TensorBoard logs.")]
Arch = Annotated[str | None, typer.Option(help="Architecture (see `tilecast train models`).")]
Steps = Annotated[int | None, typer.Option(help="Training iterations (in all, not more).")]
BatchSize = Annotated[int | None, typer.Option(help="Samples per step and process.")]
Crop = Annotated[int | None, typer.Option(help="Random crop / patch edge in pixels.")]
Seed = Annotated[int | None, typer.Option()]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint.pt exactly.")]
Settings = Annotated[list[str] | None, typer.Option("--set", help="Any other setting: key=value (repeatable).")]


def _train(name: str, config_type: type[Any], train: Callable[..., Path], files: list[Path] | None,
           flags: dict[str, Any], settings: list[str] | None, resume: bool) -> None:
    """Build the config, set up distributed training when launched by torchrun, run with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from tilecast.training.base import distributed_from_env
    from tilecast.training.config import build_config, parse_settings

    setup_logging("INFO")
    flags = {**flags, "out": None if flags.get("out") is None else str(flags["out"])}
    config = build_config(config_type, files or [], {**parse_settings(settings or []), **flags})
    dist = distributed_from_env()
    if dist.world > 1:
        import torch

        backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeRemainingColumn())
        with Progress(*columns, console=out, disable=not dist.main) as bar:
            task = bar.add_task(name, total=config.steps)

            def show(step: int, steps: int, losses: dict[str, float]) -> None:
                text = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
                bar.update(task, completed=step, description=f"{name} {text}")

            path = train(config, show, resume, dist)
    finally:
        if dist.world > 1:
            import torch

            torch.distributed.destroy_process_group()
    if dist.main:
        out.print(f"checkpoint: {path}")


@app.command("pix2pix")
@user_errors
def pix2pix(config: ConfigFiles = None, data: Data = None, out_dir: OutDir = None, arch: Arch = None,
            steps: Steps = None, batch_size: BatchSize = None, crop: Crop = None, seed: Seed = None,
            ngf: Annotated[int | None, typer.Option(help="Generator width.")] = None,
            norm: Annotated[str | None, typer.Option(help="batch, instance or none.")] = None,
            lambda_gan: Annotated[float | None, typer.Option(help="Weight of the GAN loss; 0 = L1 only.")] = None,
            resume: Resume = False, settings: Settings = None) -> None:
    """pix2pix generator (L1 + PatchGAN) on paired images: 'skimage:ihc', A/ + B/, or side-by-side AB."""
    from tilecast.training.pix2pix import Pix2PixConfig, train

    _train("pix2pix", Pix2PixConfig, train, config, dict(data=data, out=out_dir, arch=arch, steps=steps,
           batch_size=batch_size, crop=crop, seed=seed, ngf=ngf, norm=norm, lambda_gan=lambda_gan), settings, resume)


@app.command("cyclegan")
@user_errors
def cyclegan(config: ConfigFiles = None, data: Data = None, out_dir: OutDir = None, arch: Arch = None,
             steps: Steps = None, batch_size: BatchSize = None, crop: Crop = None, seed: Seed = None,
             ngf: Annotated[int | None, typer.Option(help="Generator width.")] = None,
             resume: Resume = False, settings: Settings = None) -> None:
    """CycleGAN generators on unpaired images (trainA/ trainB/ testA/ testB/); exports G_A (A -> B)."""
    from tilecast.training.cyclegan import CycleGanConfig, train

    _train("cyclegan", CycleGanConfig, train, config, dict(data=data, out=out_dir, arch=arch, steps=steps,
           batch_size=batch_size, crop=crop, seed=seed, ngf=ngf), settings, resume)


@app.command("segmenter")
@user_errors
def segmenter(config: ConfigFiles = None, data: Data = None, out_dir: OutDir = None, arch: Arch = None,
              steps: Steps = None, batch_size: BatchSize = None, crop: Crop = None, seed: Seed = None,
              ngf: Annotated[int | None, typer.Option(help="U-Net width.")] = None,
              mask_mode: Annotated[str | None, typer.Option(help="auto, binary or labels.")] = None,
              resume: Resume = False, settings: Settings = None) -> None:
    """U-Net segmenter on images/ + masks/ or 'synthetic:nuclei'."""
    from tilecast.training.segmenter import SegmenterConfig, train

    _train("segmenter", SegmenterConfig, train, config, dict(data=data, out=out_dir, arch=arch, steps=steps,
           batch_size=batch_size, crop=crop, seed=seed, ngf=ngf, mask_mode=mask_mode), settings, resume)


@app.command("classifier")
@user_errors
def classifier(config: ConfigFiles = None, data: Data = None, out_dir: OutDir = None, arch: Arch = None,
               steps: Steps = None, batch_size: BatchSize = None, crop: Crop = None, seed: Seed = None,
               ngf: Annotated[int | None, typer.Option(help="Network width.")] = None,
               balanced: Annotated[bool | None, typer.Option(help="Class-balanced sampling.")] = None,
               resume: Resume = False, settings: Settings = None) -> None:
    """Patch classifier on class subfolders or 'skimage:ihc-density'."""
    from tilecast.training.classifier import ClassifierConfig, train

    _train("classifier", ClassifierConfig, train, config, dict(data=data, out=out_dir, arch=arch, steps=steps,
           batch_size=batch_size, crop=crop, seed=seed, ngf=ngf, balanced=balanced), settings, resume)


@app.command("models")
def models() -> None:
    """List the registered architectures and what each is for."""
    from tilecast.training.models import create_model, list_models

    for name in list_models():
        task = getattr(create_model(name, ngf=4), "task", "?")
        out.print(f"{name:24} {task}")
