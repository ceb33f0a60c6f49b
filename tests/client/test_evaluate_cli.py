"""`tilecast evaluate` through its command line: JSON for scripts, folders paired by stem with pooled totals,
and bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from tilecast.cli import app

runner = CliRunner()


def labels(*rects: tuple[int, int, int, int, int], shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    image = np.zeros(shape, np.uint16)
    for ident, y0, y1, x0, x1 in rects:
        image[y0:y1, x0:x1] = ident
    return image


TRUTH = labels((1, 0, 10, 0, 10), (2, 20, 30, 20, 30))
PRED = labels((5, 0, 10, 0, 10), (6, 30, 35, 30, 35))  # one hit, one false positive, one miss


def invoke(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["evaluate", *map(str, args)])
    return result.exit_code, result.output


def test_instances_json_for_two_files(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "p.tif", PRED)
    tifffile.imwrite(tmp_path / "t.tif", TRUTH)
    code, output = invoke("instances", tmp_path / "p.tif", tmp_path / "t.tif", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["files"][0]["ap"]["0.50"] == pytest.approx(1 / 3) and report["total"]["tp"] == 1
    assert report["files"][0]["name"] == "p" and report["total"]["mean_matched_iou"] == 1.0


def test_folders_pair_by_stem_and_pool(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", PRED, tile=(16, 16))
    Image.fromarray(TRUTH.astype(np.uint8)).save(tmp_path / "pred" / "b.png")  # a perfect one, as PNG
    for name in ("a", "b", "c"):
        tifffile.imwrite(tmp_path / "truth" / f"{name}.tif", TRUTH)
    code, output = invoke("instances", tmp_path / "pred", tmp_path / "truth", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert [f["name"] for f in report["files"]] == ["a", "b"]
    total = report["total"]
    assert (total["n_true"], total["n_pred"], total["tp"]) == (4, 4, 3)
    assert total["ap"]["0.50"] == pytest.approx(3 / 5)  # pooled counts, not a mean of the files' APs
    code, table = invoke("instances", tmp_path / "pred", tmp_path / "truth")
    assert code == 0 and "total" in table and "c.tif" in table  # the unmatched file is named


def test_a_semantic_mask_scored_as_instances_and_per_class(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "mask.tif", (TRUTH > 0).astype(np.uint8))
    tifffile.imwrite(tmp_path / "t.tif", TRUTH)
    code, output = invoke("instances", tmp_path / "mask.tif", tmp_path / "t.tif", "--from-semantic", "--json")
    assert code == 0 and json.loads(output)["total"]["ap"]["0.90"] == 1.0, output
    tifffile.imwrite(tmp_path / "classes.tif", np.minimum(TRUTH, 1))
    code, output = invoke("semantic", tmp_path / "classes.tif", tmp_path / "mask.tif", "--json")
    report = json.loads(output)["total"]
    assert code == 0 and report["classes"]["1"]["dice"] == 1.0 and report["foreground_dice"] == 1.0


def test_heatmap_folders_with_slide_auc(tmp_path: Path) -> None:
    (tmp_path / "heat").mkdir()
    (tmp_path / "masks").mkdir()
    for name, level in (("tumour", 0.9), ("clean", 0.3)):
        heat = np.full((4, 4, 2), 0.2, np.float32)
        heat[1, 1, 1] = level
        tifffile.imwrite(tmp_path / "heat" / f"{name}.tif", heat, photometric="minisblack", planarconfig="contig",
                         resolution=(1 / 32, 1 / 32),
                         resolutionunit="NONE")
        mask = np.zeros((64, 64), np.uint8)
        if name == "tumour":
            mask[16:32, 16:32] = 1
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", mask)
    code, output = invoke("heatmap", tmp_path / "heat", tmp_path / "masks", "--mask-downsample", "2", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["slide_auc"] == 1.0 and [s["name"] for s in report["slides"]] == ["clean", "tumour"]
    assert report["slides"][1]["roc_auc"] == 1.0 and report["slides"][0]["roc_auc"] is None
    code, table = invoke("heatmap", tmp_path / "heat", tmp_path / "masks", "--mask-downsample", "2")
    assert code == 0 and "slide-level ROC AUC" in table


@pytest.mark.parametrize(("case", "message"), [
    ("shape", "score images of the same size"),
    ("rgb", "not a label image"),
    ("float", "not a label image"),
    ("missing", "no such file"),
    ("mixed", "two files or two folders"),
    ("negative", "ids must be 0"),
])
def test_bad_input_is_one_line(tmp_path: Path, case: str, message: str) -> None:
    truth = tmp_path / "t.tif"
    tifffile.imwrite(truth, TRUTH)
    pred = tmp_path / "p.tif"
    if case == "shape":
        tifffile.imwrite(pred, TRUTH[:30])
    elif case == "rgb":
        tifffile.imwrite(pred, np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    elif case == "float":
        tifffile.imwrite(pred, TRUTH.astype(np.float32))
    elif case == "mixed":
        pred = tmp_path
    elif case == "negative":
        tifffile.imwrite(pred, TRUTH.astype(np.int16) - 1)
    code, output = invoke("instances", pred, truth)
    said = " ".join(output.split())
    assert code == 1 and message in said and "Traceback" not in said, said


def test_a_heat_map_from_a_real_server_against_a_coarser_mask(tmp_path: Path) -> None:
    """convert's own heat map (bundled ihc-density, stride 32) against a nuclei mask at a quarter of the
    resolution: the scale comes from the files, the class name from the CSV beside the heat map."""
    from tests.conftest import REPO_ROOT, local_settings
    from tilecast.client import Client, convert_image
    from tilecast.client.convert import ConvertOptions
    from tilecast.server.app import ServerThread
    from tilecast.training.data.classes import nuclei_fraction_map
    from tilecast.training.data.samples import ihc_image

    rgb = ihc_image()
    tifffile.imwrite(tmp_path / "ihc.tif", rgb)
    tifffile.imwrite(tmp_path / "mask.tif", nuclei_fraction_map(rgb)[::4, ::4].astype(np.uint8), tile=(16, 16))
    with ServerThread(local_settings(REPO_ROOT / "models")) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "ihc-density", tmp_path / "ihc.tif", tmp_path / "heat.tif", ConvertOptions(stride=32))
    code, output = invoke("heatmap", tmp_path / "heat.tif", tmp_path / "mask.tif", "--min-fraction", "0.25",
                          "--json")
    assert code == 0, output
    slide = json.loads(output)["slides"][0]
    assert (slide["class_name"], slide["cells"], slide["scored"]) == ("dense", 256, 256)
    assert slide["roc_auc"] > 0.85 and slide["average_precision"] > 0.8 and slide["slide_positive"], slide
