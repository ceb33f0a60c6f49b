"""Connected components of a foreground mask, so a semantic mask can be scored as instances.

`scipy.ndimage.label` is used where scipy is importable (it is not in the client extra); otherwise a NumPy
label propagation gives the same components. Band by band, labels get provisional ids; components that
meet across a band border are joined at the end (`final_ids`), so memory stays one band plus the ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.proto.errors import InvalidOption

Array = npt.NDArray[Any]
CONNECTIVITIES = (4, 8)


def scipy_available() -> bool:
    """Whether scipy.ndimage can label components here (else the NumPy propagation does)."""
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


def _offsets(connectivity: int) -> list[tuple[int, int]]:
    if connectivity not in CONNECTIVITIES:
        raise InvalidOption("--connectivity", connectivity, "use 4 (edges) or 8 (edges and corners)")
    four = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    return four if connectivity == 4 else [*four, (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _shifted(values: Array, dy: int, dx: int, fill: int) -> Array:
    """values[y + dy, x + dx], `fill` outside."""
    out = np.full_like(values, fill)
    h, w = values.shape
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        values[max(0, dy):h - max(0, -dy) or None, max(0, dx):w - max(0, -dx) or None]
    return out


def label_numpy(mask: Array, connectivity: int = 8) -> tuple[Array, int]:
    """Components by min-label propagation with pointer jumping: (labels 1..n in raster order of first
    pixel, n). Rounds grow with the logarithm of a component's extent, not its area."""
    offsets = _offsets(connectivity)
    h, w = mask.shape
    big = h * w
    work = np.where(mask, np.arange(big, dtype=np.int64).reshape(h, w), big)
    while True:
        new = work
        for dy, dx in offsets:
            new = np.minimum(new, _shifted(work, dy, dx, big))
        new = np.where(mask, new, big)
        flat = np.append(new.ravel(), big)
        new = flat[new]  # jump: take the label of the pixel whose index we hold
        if np.array_equal(new, work):
            break
        work = new
    roots, labels = np.unique(work, return_inverse=True)
    labels = labels.reshape(h, w) + 1
    labels[~mask] = 0
    return labels.astype(np.int64), int(roots.size - (1 if (~mask).any() else 0))


def label(mask: Array, connectivity: int = 8, use_scipy: bool | None = None) -> tuple[Array, int]:
    """(labels, count) of the True pixels of a 2-D mask, by 4- or 8-connectivity."""
    _offsets(connectivity)
    if use_scipy if use_scipy is not None else scipy_available():
        import scipy.ndimage

        structure = np.ones((3, 3), bool) if connectivity == 8 else None
        labels, count = scipy.ndimage.label(mask, structure=structure)
        return np.asarray(labels, np.int64), int(count)
    return label_numpy(mask, connectivity)


class BandLabeller:
    """Labels a mask band by band with provisional ids, remembering which ids touch across band borders."""

    def __init__(self, connectivity: int = 8, use_scipy: bool | None = None) -> None:
        _offsets(connectivity)
        self.connectivity, self.use_scipy = connectivity, use_scipy
        self._next = 1
        self._last_row: Array | None = None
        self._edges: list[Array] = []

    def label(self, mask: Array) -> Array:
        """Provisional ids of one band (0 = background)."""
        labels, count = label(mask, self.connectivity, self.use_scipy)
        labels = np.where(labels > 0, labels + (self._next - 1), 0)
        if self._last_row is not None and labels.shape[0]:
            self._join(self._last_row, labels[0])
        self._next += count
        if labels.shape[0]:
            self._last_row = labels[-1].copy()
        return labels

    def _join(self, above: Array, below: Array) -> None:
        shifts = (0,) if self.connectivity == 4 else (-1, 0, 1)
        for dx in shifts:
            b = _shifted(below[None, :], 0, dx, 0)[0]
            touching = (above > 0) & (b > 0)
            if touching.any():
                self._edges.append(np.stack([above[touching], b[touching]], axis=1))

    def final_ids(self) -> Array:
        """mapping[provisional id] -> final id (1..n, joined across bands; 0 stays 0)."""
        root = np.arange(self._next, dtype=np.int64)
        if self._edges:
            edges = np.unique(np.concatenate(self._edges), axis=0)
            while True:  # min-label propagation over the border edges, then pointer jumping
                low = np.minimum(root[edges[:, 0]], root[edges[:, 1]])
                new = root.copy()
                np.minimum.at(new, edges[:, 0], low)
                np.minimum.at(new, edges[:, 1], low)
                new = new[new]
                if np.array_equal(new, root):
                    break
                root = new
        _, compact = np.unique(root, return_inverse=True)
        return compact.astype(np.int64)  # root 0 (background) stays first, so 0 -> 0
