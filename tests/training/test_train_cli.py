"""`tilecast train`: defaults, then TOML override files, then flags and --set; mistakes are one line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tilecast.cli import app
from tilecast.training.base import load_checkpoint

runner = CliRunner()


def test_config_file_flags_and_set_are_layered(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text('steps = 5\nngf = 4\ncrop = 32\nbatch_size = 2\nlr = 0.01\n')
    result = runner.invoke(app, ["train", "classifier", "--config", str(tmp_path / "small.toml"), "--steps", "1",
                                 "--out", str(tmp_path / "run"), "--set", "weight_decay=0", "--set", "threads=1"])
    assert result.exit_code == 0, result.output
    config = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]
    assert (config["steps"], config["ngf"], config["lr"], config["weight_decay"]) == (1, 4, 0.01, 0.0)


def test_unknown_setting_and_bad_value_are_clear(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "classifier", "--set", "colour=blue", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "'colour' is not a setting of ClassifierConfig" in result.output
    result = runner.invoke(app, ["train", "segmenter", "--set", "lr=fast", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "lr takes a float" in result.output
    result = runner.invoke(app, ["train", "cyclegan", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "trainA" in result.output


def test_models_lists_every_task() -> None:
    result = runner.invoke(app, ["train", "models"])
    assert result.exit_code == 0
    for name, task in (("resnet_9blocks", "generator"), ("unet_segmenter", "segmenter"),
                       ("resnet_classifier", "classifier")):
        assert any(line.split() == [name, task] for line in result.output.splitlines()), result.output
