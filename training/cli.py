"""`tilecast train ...`: one command per training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tilecast.console import out, setup_logging, user_errors

app = typer.Typer(help="Train models (needs the 'train' extra: PyTorch).", no_args_is_help=True)


@app.command("pix2pix")
@user_errors
def pix2pix(
    data: Annotated[str, typer.Option(help="'skimage:ihc' or a folder with A/ and B/ (train/, val/ inside).")] = (
        "skimage:ihc"),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for checkpoint.pt.")] = Path("runs/pix2pix"),
    arch: Annotated[str, typer.Option(help="Generator architecture.")] = "resnet_6blocks",
    ngf: Annotated[int, typer.Option(help="Generator width.")] = 16,
    norm: Annotated[str, typer.Option(help="batch, instance or none.")] = "batch",
    steps: Annotated[int, typer.Option(help="Training iterations.")] = 600,
    batch_size: Annotated[int, typer.Option()] = 8,
    crop: Annotated[int, typer.Option(help="Random crop edge in pixels.")] = 128,
    lambda_gan: Annotated[float, typer.Option(help="Weight of the GAN loss; 0 = L1 only.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a pix2pix generator (L1 + PatchGAN) on paired images."""
    from rich.progress import Progress

    from tilecast.training.pix2pix import Pix2PixConfig, train

    setup_logging("INFO")
    config = Pix2PixConfig(data=data, out=str(out_dir), arch=arch, ngf=ngf, norm=norm, steps=steps,
                           batch_size=batch_size, crop=crop, lambda_gan=lambda_gan, seed=seed)
    with Progress(console=out) as bar:
        task = bar.add_task("pix2pix", total=steps)

        def show(step: int, losses: dict[str, float]) -> None:
            text = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            bar.update(task, completed=step, description=f"pix2pix {text}")

        path = train(config, show)
    out.print(f"checkpoint: {path}")
