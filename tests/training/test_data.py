"""Each folder layout loads the right pairs; crops are read lazily and augmented alike; sampling balances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tilecast.training.data.classes import RandomPatches, ihc_density, load_classes
from tilecast.training.data.images import LazyImage, Normalization, fit_normalization
from tilecast.training.data.masks import RandomMaskedCrops, load_masked, validation_pairs
from tilecast.training.data.nuclei import synthesize
from tilecast.training.data.paired import RandomPairCrops, load_paired, whole
from tilecast.training.data.unpaired import RandomUnpairedCrops, load_unpaired

rng = np.random.default_rng(0)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, array, tile=(16, 16) if min(array.shape[:2]) >= 16 else None)
    else:
        Image.fromarray(array).save(path)


def test_paired_folder_pairs_by_name(tmp_path: Path) -> None:
    images = {}
    for name in ("x.png", "y.png"):
        a, b = rng.integers(0, 255, (40, 40), np.uint8), rng.integers(0, 255, (40, 40, 3), np.uint8)
        _save(tmp_path / "A" / name, a)
        _save(tmp_path / "B" / name, b)
        images[name] = (a, b)
    pairs = load_paired(str(tmp_path))
    assert pairs.channels == (1, 3)
    for (a, b), got_a, got_b in zip(images.values(), pairs.inputs, pairs.targets, strict=True):
        np.testing.assert_array_equal(whole(got_a)[:, :, 0], a)
        np.testing.assert_array_equal(whole(got_b), b)
    (tmp_path / "B" / "y.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"y\.png"):
        load_paired(str(tmp_path))


def test_side_by_side_ab_splits_halves_and_crops_stay_aligned(tmp_path: Path) -> None:
    a = rng.integers(0, 60000, (48, 40, 2), np.uint16)
    _save(tmp_path / "train" / "pair.tif", np.concatenate([a, a + 1], axis=1))  # B = A + 1, 16-bit, tiled
    pairs = load_paired(str(tmp_path), "train")
    assert pairs.inputs[0].shape == (48, 40, 2) and "side-by-side" in pairs.description
    np.testing.assert_array_equal(whole(pairs.inputs[0]), a)
    np.testing.assert_array_equal(whole(pairs.targets[0]), a + 1)
    crops = RandomPairCrops(pairs, 16, seed=3)
    for index in range(5):
        x, y = crops[index]
        np.testing.assert_allclose((y - x).numpy(), 1 / 32767.5, atol=1e-6)  # the same window and turn


def test_lazy_tiff_reads_regions(tmp_path: Path) -> None:
    image = rng.integers(0, 255, (100, 90, 3), np.uint8)
    _save(tmp_path / "big.tif", image)
    lazy = LazyImage(tmp_path / "big.tif")
    assert lazy.shape == (100, 90, 3)
    np.testing.assert_array_equal(lazy[slice(33, 70), slice(5, 61)], image[33:70, 5:61])


def test_unpaired_layout(tmp_path: Path) -> None:
    for folder, count in (("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 1)):
        for k in range(count):
            _save(tmp_path / folder / f"{k}.png", rng.integers(0, 255, (32 + 8 * k, 40, 3), np.uint8))
    train, val = load_unpaired(str(tmp_path), "train"), load_unpaired(str(tmp_path), "val")
    assert (len(train.domain_a), len(train.domain_b), len(val.domain_a)) == (3, 2, 1)
    a, b = RandomUnpairedCrops(train, 24)[0]
    assert a.shape == b.shape == (3, 24, 24)
    with pytest.raises(FileNotFoundError, match="trainA"):
        load_unpaired(str(tmp_path / "trainA"), "train")


@pytest.mark.parametrize(("values", "mode", "classes"), [
    ((0, 255), "auto", 2),  # binary masks as 0/255 PNG
    ((0, 1, 2, 3), "auto", 4),  # class ids
    ((0, 17, 300, 4000), "binary", 2),  # 16-bit instance labels read as foreground
])
def test_masks_layout(tmp_path: Path, values: tuple[int, ...], mode: str, classes: int) -> None:
    dtype = np.uint16 if max(values) > 255 else np.uint8
    mask = np.asarray(values, dtype)[rng.integers(0, len(values), (40, 40))]
    image = rng.integers(0, 4000, (40, 40), np.uint16)
    _save(tmp_path / "images" / "cells.tif", image)
    _save(tmp_path / "masks" / ("cells.png" if dtype == np.uint8 else "cells.tif"), mask)
    data = load_masked(str(tmp_path), "train", mode)
    assert data.classes == classes
    ((got_image, labels),) = validation_pairs(data)
    np.testing.assert_array_equal(got_image[:, :, 0], image)
    expected = (np.asarray(mask) > 0) if data.mask_mode == "binary" else mask
    np.testing.assert_array_equal(labels, expected)
    norm = fit_normalization(data.images, "percentile", 1)
    x, y = RandomMaskedCrops(data, norm, 32)[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32) and int(y.max()) < classes


def test_synthetic_nuclei_have_masks_under_bright_blobs() -> None:
    for seed in range(4):
        image, mask = synthesize(np.random.default_rng(seed), 128)
        assert image.shape == (128, 128, 1) and image.dtype in (np.uint8, np.uint16) and mask.shape == (128, 128)
        assert 0 < mask.mean() < 0.9
        assert image[mask == 1].mean() > image[mask == 0].mean()  # nuclei are brighter than the background


def test_class_folders_and_balanced_sampling(tmp_path: Path) -> None:
    for k in range(20):
        _save(tmp_path / "normal" / f"{k}.png", np.full((40, 40, 3), 10, np.uint8))
    _save(tmp_path / "tumour" / "0.png", np.full((40, 40, 3), 200, np.uint8))  # the rare class
    data = load_classes(str(tmp_path), "train", 32)
    assert data.class_names == ["normal", "tumour"] and data.labels.count(1) == 1
    norm = fit_normalization(data.images, "fixed", 3)
    balanced = [int(RandomPatches(data, norm, 32, balanced=True)[i][1]) for i in range(400)]
    plain = [int(RandomPatches(data, norm, 32, balanced=False)[i][1]) for i in range(400)]
    assert 0.4 < np.mean(balanced) < 0.6 and np.mean(plain) < 0.15


def test_ihc_density_labels_follow_nuclei_content() -> None:
    data = ihc_density("train", 64, stride=32)
    assert set(data.labels) == {0, 1} and data.windows is not None
    norm = Normalization("fixed", (0.5,) * 3, (0.25,) * 3)
    assert RandomPatches(data, norm, 64, balanced=False)[0][0].shape == (3, 64, 64)
    dense = [data.patch(k) for k, label in enumerate(data.labels) if label == 1]
    sparse = [data.patch(k) for k, label in enumerate(data.labels) if label == 0]
    # hematoxylin is blue: dense patches are darker in red than sparse ones
    assert np.mean([p[..., 0].mean() for p in dense]) < np.mean([p[..., 0].mean() for p in sparse])
