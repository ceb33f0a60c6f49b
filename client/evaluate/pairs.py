"""Predictions and ground truth given as two files, or as two folders whose files pair by name stem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from tilecast.client.evaluate.labels import LabelImageError

T = TypeVar("T")
LABEL_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png")
HEATMAP_SUFFIXES = (".tiff", ".tif")


def stem(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The name without its image suffix (`a.ome.tif` -> `a`), or None for a file of another kind."""
    name = path.name
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Pairing:
    pairs: list[tuple[str, Path, Path]]  # (stem, prediction, truth)
    unmatched: list[Path]  # files of either folder without a partner


def pair_folders(pred_dir: Path, truth_dir: Path, pred_suffixes: tuple[str, ...] = LABEL_SUFFIXES,
                 truth_suffixes: tuple[str, ...] = LABEL_SUFFIXES) -> Pairing:
    """Files of two folders paired by stem; raises LabelImageError when no stem is in both."""
    def listing(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
        found = {}
        for path in sorted(folder.iterdir()):
            name = stem(path, suffixes) if path.is_file() else None
            if name is not None and ".overlay" not in path.name:
                found[name] = path
        return found

    preds, truths = listing(pred_dir, pred_suffixes), listing(truth_dir, truth_suffixes)
    common = sorted(set(preds) & set(truths))
    if not common:
        raise LabelImageError(f"no file of {pred_dir} has a namesake in {truth_dir} (files pair by name stem)")
    unmatched = [preds[s] for s in sorted(set(preds) - set(truths))] + \
                [truths[s] for s in sorted(set(truths) - set(preds))]
    return Pairing([(s, preds[s], truths[s]) for s in common], unmatched)


@dataclass(frozen=True)
class Evaluation(Generic[T]):
    """Scores per pair (one row for two files) and what had no partner."""

    rows: list[tuple[str, T]]
    unmatched: list[Path]


def evaluate_paths(pred: Path, truth: Path, score: Callable[[Path, Path], T],
                   pred_suffixes: tuple[str, ...] = LABEL_SUFFIXES,
                   truth_suffixes: tuple[str, ...] = LABEL_SUFFIXES) -> Evaluation[T]:
    """`score` of two files, or of every pair of two folders."""
    for path in (pred, truth):
        if not path.exists():
            raise LabelImageError(f"{path}: no such file or folder")
    if pred.is_dir() != truth.is_dir():
        raise LabelImageError(f"give two files or two folders; {pred} and {truth} are one of each")
    if not pred.is_dir():
        return Evaluation([(stem(pred, pred_suffixes) or pred.name, score(pred, truth))], [])
    pairing = pair_folders(pred, truth, pred_suffixes, truth_suffixes)
    return Evaluation([(name, score(p, t)) for name, p, t in pairing.pairs], pairing.unmatched)
