"""Two processes under torchrun with the gloo backend on CPU: DistributedDataParallel keeps the replicas
identical, and rank 0 alone writes the checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tilecast.local import free_port
from tilecast.training.base import load_checkpoint


def test_two_process_gloo_run(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "tilecast.cli", "train", "segmenter", "--out", str(out),
        "--arch", "unet_segmenter_small", "--steps", "3", "--batch-size", "2", "--crop", "32", "--ngf", "4",
        "--set", "threads=1", "--set", "device=cpu",
    ]
    env = {**os.environ, "COLUMNS": "400"}  # one log record per line
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = re.findall(r"rank (\d) of 2 finished at step 3; parameter checksum (\S+)", done.stdout + done.stderr)
    assert sorted(rank for rank, _ in finished) == ["0", "1"], done.stderr[-3000:]
    assert len({checksum for _, checksum in finished}) == 1  # gradients were averaged: same weights on both ranks
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 3
