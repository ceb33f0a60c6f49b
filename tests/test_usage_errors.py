"""Every numeric and enumerated option of every command (serve has its own tests): a bad value is one line
naming the option and what is valid, exit status 2 (a usage error), never a traceback.

The values are checked before any server, file or network is touched, so no server runs here."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tilecast.cli import app

runner = CliRunner()
IMAGE = "missing-input.tif"  # never read: the options are refused first
CONVERT = ["convert", IMAGE, "-m", "any-model", "-s", "127.0.0.1:1"]
TRAIN = ["--out", "unused-run"]
EXPORT = ["export", "onnx", "missing.pt", "--name", "ok-name"]

# (arguments, the option the message must name)
CASES: list[tuple[list[str], str]] = [
    # convert: each ConvertOptions field and each flag of the command
    ([*CONVERT, "--tile-size", "-256"], "--tile-size"),
    ([*CONVERT, "--tile-size", "100"], "--tile-size"),
    ([*CONVERT, "--tile-size", "0", "--halo", "-5"], "--halo"),
    ([*CONVERT, "--stride", "-32"], "--stride"),
    ([*CONVERT, "--window", "0"], "--window"),
    ([*CONVERT, "--window", "-1"], "--window"),
    ([*CONVERT, "--overlap", "-7", "--stitch", "blend"], "--overlap"),
    ([*CONVERT, "--min-tissue", "2"], "--min-tissue"),
    ([*CONVERT, "--min-tissue", "-0.1"], "--min-tissue"),
    ([*CONVERT, "--min-tissue", "nan"], "--min-tissue"),
    ([*CONVERT, "--level", "-1"], "--level"),
    ([*CONVERT, "--mpp", "-0.5"], "--mpp"),
    ([*CONVERT, "--version", "-1"], "--version"),
    ([*CONVERT, "--stitch", "average"], "--stitch"),
    ([*CONVERT, "--compression", "lzma"], "--compression"),
    ([*CONVERT, "--format", "png"], "--format"),
    ([*CONVERT, "--channels", "red"], "--channels"),
    ([*CONVERT, "--channels", "-1"], "--channels"),
    ([*CONVERT, "--window", "many"], "--window"),
    (["convert", IMAGE, "-m", "any-model", "-s", "localhost"], "--server"),
    (["convert", IMAGE, "-m", "any-model", "-s", "localhost:99999"], "--server"),
    (["models", "-s", "localhost"], "--server"),
    # train: every flag of every loop, and settings given with --set
    *[([*["train", loop], *TRAIN, *flag], name) for loop in ("pix2pix", "cyclegan", "segmenter", "classifier")
      for flag, name in ((["--steps", "-3"], "--steps"), (["--batch-size", "0"], "--batch-size"),
                         (["--crop", "8"], "--crop"), (["--seed", "-1"], "--seed"), (["--ngf", "0"], "--ngf"),
                         (["--arch", "typo"], "--arch"), (["--set", "lr=0"], "lr"),
                         (["--set", "device=tpu"], "device"), (["--set", "threads=-2"], "threads"),
                         (["--set", "log_every=0"], "log_every"), (["--set", "checkpoint_every=-1"],
                                                                   "checkpoint_every"))],
    (["train", "pix2pix", *TRAIN, "--norm", "group"], "--norm"),
    (["train", "pix2pix", *TRAIN, "--lambda-gan", "-1"], "--lambda-gan"),
    (["train", "pix2pix", *TRAIN, "--set", "gan_mode=wgan"], "gan_mode"),
    (["train", "pix2pix", *TRAIN, "--set", "beta1=1.5"], "beta1"),
    (["train", "pix2pix", *TRAIN, "--set", "lambda_l1=-1"], "lambda_l1"),
    (["train", "pix2pix", *TRAIN, "--set", "n_layers_d=0"], "n_layers_d"),
    (["train", "cyclegan", *TRAIN, "--set", "pool_size=-1"], "pool_size"),
    (["train", "cyclegan", *TRAIN, "--set", "lambda_identity=-0.5"], "lambda_identity"),
    (["train", "segmenter", *TRAIN, "--mask-mode", "rgb"], "--mask-mode"),
    (["train", "segmenter", *TRAIN, "--arch", "resnet_9blocks"], "--arch"),  # a generator, not a segmenter
    (["train", "segmenter", *TRAIN, "--set", "normalization=zscore"], "normalization"),
    (["train", "segmenter", *TRAIN, "--set", "dice_weight=-1"], "dice_weight"),
    (["train", "classifier", *TRAIN, "--set", "weight_decay=-1"], "weight_decay"),
    # export onnx
    ([*EXPORT, "--name", "bad/name"], "--name"),
    ([*EXPORT, "--name", "../up"], "--name"),
    ([*EXPORT, "--format", "keras"], "--format"),
    ([*EXPORT, "--arch", "resnet_10blocks"], "--arch"),
    ([*EXPORT, "--norm", "group"], "--norm"),
    ([*EXPORT, "--kind", "detector"], "--kind"),
    ([*EXPORT, "--input-dtype", "int8"], "--input-dtype"),
    ([*EXPORT, "--output-dtype", "float32"], "--output-dtype"),
    ([*EXPORT, "--ngf", "0"], "--ngf"),
    ([*EXPORT, "--input-nc", "0"], "--input-nc"),
    ([*EXPORT, "--output-nc", "0"], "--output-nc"),
    ([*EXPORT, "--size-multiple", "0"], "--size-multiple"),
    ([*EXPORT, "--mean", "half"], "--mean"),
    ([*EXPORT, "--mean", "0.5,0.5"], "--mean"),
    ([*EXPORT, "--std", "0"], "--std"),
    ([*EXPORT, "--format", "module", "--module-kwargs", "[1]"], "--module-kwargs"),
    ([*EXPORT, "--version", "-1"], "--version"),
    ([*EXPORT, "--tile-size", "0"], "--tile-size"),
    ([*EXPORT, "--max-size", "64"], "--max-size"),
    ([*EXPORT, "--opset", "5"], "--opset"),
    ([*EXPORT, "--classes", "tumour,tumour"], "--classes"),
    # bench, bench-convert, bench-monai, demo
    (["bench", "--tile", "0"], "--tile"),
    (["bench", "--seconds", "0"], "--seconds"),
    (["bench", "--rounds", "0"], "--rounds"),
    (["bench", "--samples", "0"], "--samples"),
    (["bench", "--threads", "-1"], "--threads"),
    (["bench", "--concurrency", "0,2"], "--concurrency"),
    (["bench", "--concurrency", "a"], "--concurrency"),
    (["bench-convert", "--sizes", "0"], "--sizes"),
    (["bench-convert", "--compression", "lzma"], "--compression"),
    (["bench-convert", "--stitch", "auto"], "--stitch"),
    (["bench-monai", "--monai-python", "/no/python", "--size", "0"], "--size"),
    (["bench-monai", "--monai-python", "/no/python", "--threads", "-1"], "--threads"),
    (["demo", "--size", "0"], "--size"),
    # evaluate
    (["evaluate", "instances", "p.tif", "t.tif", "--from-semantic", "--connectivity", "6"], "--connectivity"),
    (["evaluate", "heatmap", "h.tif", "m.tif", "--min-fraction", "1.5"], "--min-fraction"),
    (["evaluate", "heatmap", "h.tif", "m.tif", "--threshold", "2"], "--threshold"),
    (["evaluate", "heatmap", "h.tif", "m.tif", "--top-k", "-1"], "--top-k"),
    (["evaluate", "heatmap", "h.tif", "m.tif", "--mask-downsample", "-4"], "--mask-downsample"),
]


@pytest.mark.parametrize(("args", "option"), CASES, ids=[" ".join(a[:2] + a[-2:]) for a, _ in CASES])
def test_a_bad_value_is_a_usage_error_naming_the_option(args: list[str], option: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing is written, and were it, not into the source tree
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert option in said and "Traceback" not in said, said
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    ([*CONVERT, "--blend-window", "cosine"], "--blend-window 'cosine': use one of gaussian, linear"),
    ([*CONVERT, "--tile-deadline-ms", "-5"], "--tile-deadline-ms -5: a per-tile deadline must be 0 (none)"),
    ([*CONVERT, "--wait-s", "-1"], "--wait-s -1: give the seconds"),
])
def test_options_of_round_one_are_usage_errors_too(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and message in said and "Traceback" not in said, said
