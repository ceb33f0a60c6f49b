"""`tilecast evaluate`: instance, semantic and heat-map scores against ground truth, as a table or JSON."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer
from rich import box
from rich.table import Table

from tilecast.console import out, user_errors

if TYPE_CHECKING:
    from tilecast.client.evaluate.heatmap import HeatmapScores
    from tilecast.client.evaluate.instances import InstanceScores
    from tilecast.client.evaluate.pairs import Evaluation
    from tilecast.client.evaluate.semantic import SemanticScores

app = typer.Typer(no_args_is_help=True, help="Score outputs against ground truth (label images, heat maps).")
PredArg = Annotated[Path, typer.Argument(help="A prediction file, or a folder of them (paired by name stem).")]
TruthArg = Annotated[Path, typer.Argument(help="The ground-truth file, or a folder of them.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, allow_nan=False, default=lambda v: None))


def _unmatched(evaluation: Evaluation[Any]) -> None:
    if evaluation.unmatched:
        out.print(f"[yellow]no partner, skipped:[/] {', '.join(str(p) for p in evaluation.unmatched)}",
                  highlight=False)


def _f(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


class Pooled(Protocol):
    """Scores of one image that add up over images."""

    def __add__(self: S, other: S) -> S: ...

    def as_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Pooled)


def _show_pooled(evaluation: Evaluation[S], as_json: bool, table: Callable[[list[tuple[str, S]], S], None]) -> None:
    """Per-file rows and the pooled total, as JSON or through `table`."""
    total = functools.reduce(lambda a, b: a + b, (s for _, s in evaluation.rows))
    if as_json:
        _echo_json({"files": [{"name": n, **s.as_dict()} for n, s in evaluation.rows], "total": total.as_dict()})
        return
    table(evaluation.rows, total)
    _unmatched(evaluation)


@app.command("instances")
@user_errors
def instances(
    pred: PredArg, truth: TruthArg, as_json: JsonOption = False,
    from_semantic: Annotated[bool, typer.Option(
        "--from-semantic", "--connected-components",
        help="The prediction is a class mask: label its foreground by connected components first.")] = False,
    connectivity: Annotated[int, typer.Option(help="With --from-semantic: 8 (edges and corners) or 4.")] = 8,
) -> None:
    """AP at IoU 0.5..0.9 (TP / (TP + FP + FN), one-to-one matching), mean matched IoU, precision, recall,
    F1, merged and split objects, foreground Dice; over folders, per file and pooled."""
    from tilecast.client.evaluate.components import _offsets
    from tilecast.client.evaluate.contingency import of_files
    from tilecast.client.evaluate.instances import instance_scores
    from tilecast.client.evaluate.pairs import evaluate_paths

    _offsets(connectivity)  # refuse a bad --connectivity before reading anything
    components = connectivity if from_semantic else None
    evaluation = evaluate_paths(pred, truth, lambda p, t: instance_scores(of_files(p, t, components=components)))
    _show_pooled(evaluation, as_json, _instance_table)


def _instance_table(rows: list[tuple[str, InstanceScores]], total: InstanceScores) -> None:
    table = Table("file", "true", "pred", "AP50", "AP75", "AP90", "mIoU", "prec", "recall", "F1", "merged", "split",
                  "Dice", title="instances: AP = TP / (TP + FP + FN) at IoU 0.5, 0.75, 0.9",
                  box=box.SIMPLE_HEAD, padding=(0, 0))
    shown = [*rows, ("total", total)] if len(rows) > 1 else rows
    for name, s in shown:
        table.add_row(name, str(s.n_true), str(s.n_pred), _f(s.ap(0)), _f(s.ap(5)), _f(s.ap(8)),
                      _f(s.mean_matched_iou), _f(s.precision), _f(s.recall), _f(s.f1), str(s.merged), str(s.split),
                      _f(s.foreground_dice))
    out.print(table)
    curve = "  ".join(f"{t:.2f}: {total.ap(i):.3f}" for i, t in enumerate(total.thresholds))
    out.print(f"AP by IoU threshold: {curve}", highlight=False)


@app.command("semantic")
@user_errors
def semantic(pred: PredArg, truth: TruthArg, as_json: JsonOption = False) -> None:
    """Dice and IoU per class and of the foreground (nonzero vs nonzero); over folders, per file and pooled."""
    from tilecast.client.evaluate.contingency import of_files
    from tilecast.client.evaluate.pairs import evaluate_paths
    from tilecast.client.evaluate.semantic import semantic_scores

    _show_pooled(evaluate_paths(pred, truth, lambda p, t: semantic_scores(of_files(p, t))), as_json, _semantic_table)


def _semantic_table(rows: list[tuple[str, SemanticScores]], total: SemanticScores) -> None:
    table = Table("file", "class", "Dice", "IoU", "pred px", "true px", title="semantic")
    for name, s in [*rows, ("total", total)] if len(rows) > 1 else rows:
        for c, counts in s.classes.items():
            table.add_row(name, f"{c}{' (background)' if c == 0 else ''}", _f(counts.dice), _f(counts.iou),
                          str(counts.pred), str(counts.true))
        table.add_row(name, "foreground", _f(s.foreground.dice), _f(s.foreground.iou), str(s.foreground.pred),
                      str(s.foreground.true), end_section=True)
    out.print(table)


@app.command("heatmap")
@user_errors
def heatmap(
    heat: Annotated[Path, typer.Argument(help="A heat map written by `tilecast convert`, or a folder of them.")],
    mask: Annotated[Path, typer.Argument(help="The slide's annotation mask (any level), or a folder of them.")],
    class_: Annotated[str, typer.Option("--class", help="Class index or name to score (default: the last).")] = "",
    min_fraction: Annotated[float, typer.Option(
        help="A cell is positive when more than this fraction of it is (0: any positive pixel).")] = 0.0,
    threshold: Annotated[float, typer.Option(help="Score at which a cell is called positive, for Dice.")] = 0.5,
    top_k: Annotated[int, typer.Option(help="Slide score: mean of the k highest cells (0: the maximum).")] = 0,
    mask_downsample: Annotated[float, typer.Option(
        help="Level-0 pixels per mask pixel, when the files carry no physical pixel size (0: from the files).")
    ] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """ROC AUC and average precision of cell scores against the mask at the heat map's scale, Dice of the
    thresholded map, the slide score; over folders, per slide plus the slide-level AUC."""
    from tilecast.client.evaluate.heatmap import HeatmapOptions, heatmap_scores, slide_auc
    from tilecast.client.evaluate.pairs import HEATMAP_SUFFIXES, evaluate_paths

    options = HeatmapOptions(class_, min_fraction, threshold, top_k, mask_downsample)
    evaluation = evaluate_paths(heat, mask, lambda h, m: heatmap_scores(h, m, options), HEATMAP_SUFFIXES)
    auc = slide_auc([s for _, s in evaluation.rows])
    if as_json:
        _echo_json({"slides": [{"name": n, **s.as_dict()} for n, s in evaluation.rows],
                    "slide_auc": None if math.isnan(auc) else auc})
        return
    _heatmap_table(evaluation.rows)
    if len(evaluation.rows) > 1:
        out.print(f"slide-level ROC AUC ({len(evaluation.rows)} slides, label = mask has any positive): {_f(auc)}",
                  highlight=False)
    _unmatched(evaluation)


def _heatmap_table(rows: list[tuple[str, HeatmapScores]]) -> None:
    table = Table("slide", "class", "cells", "scored", "positive", "ROC AUC", "AP", "Dice", "slide score",
                  "positive slide", title="heat map vs mask")
    for name, s in rows:
        table.add_row(name, s.class_name, str(s.cells), str(s.scored), str(s.positive), _f(s.roc_auc),
                      _f(s.average_precision), _f(s.dice), _f(s.slide_score), "yes" if s.slide_positive else "no")
    out.print(table)
