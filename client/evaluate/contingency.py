"""How many pixels each (prediction id, truth id) pair shares, counted band by band: a sparse table with one
entry per overlapping pair, never a dense n x m array. Counts of several bands add up, so a band-wise table
equals the whole-image one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.evaluate.labels import checked_ids, open_labels, paired_blocks

Array = npt.NDArray[Any]
SHIFT = np.uint64(32)
LOW = np.uint64((1 << 32) - 1)
PENDING = 1 << 18  # pairs of blocks waiting to be merged, at least


class Contingency:
    """Sorted unique keys (pred << 32 | truth) and their pixel counts; (0, 0) is background on both.

    Blocks' tables wait in a list and are merged when they outgrow the table itself, so a table of n
    objects is re-sorted O(log) times, not once per block."""

    def __init__(self) -> None:
        self._keys: Array = np.zeros(0, np.uint64)
        self._counts: Array = np.zeros(0, np.int64)
        self._pending: list[tuple[Array, Array]] = []
        self._pending_size = 0

    def add(self, pred: Array, truth: Array) -> None:
        """Count the pixel pairs of one block (ids as unsigned integers below 2**32)."""
        pred, truth = pred.ravel(), truth.ravel()
        labelled = (pred != 0) | (truth != 0)  # most pixels are background on both: count those without sorting
        pairs = (pred[labelled].astype(np.uint64) << SHIFT) | truth[labelled].astype(np.uint64)
        keys, counts = np.unique(pairs, return_counts=True)
        background = pred.size - int(labelled.sum())
        if background:
            keys, counts = np.concatenate([[np.uint64(0)], keys]), np.concatenate([[background], counts])
        self._pending.append((keys.astype(np.uint64), counts.astype(np.int64)))
        self._pending_size += keys.size
        if self._pending_size > max(self._keys.size, PENDING):
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
            counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
            self._keys, self._counts = _reduce(keys, counts)
            self._pending, self._pending_size = [], 0

    @property
    def keys(self) -> Array:
        self._flush()
        return self._keys

    @property
    def counts(self) -> Array:
        self._flush()
        return self._counts

    @property
    def pred(self) -> Array:
        return self.keys >> SHIFT

    @property
    def truth(self) -> Array:
        return self.keys & LOW

    def relabel_pred(self, mapping: Array) -> Contingency:
        """The table with prediction ids replaced by mapping[id] (pairs that now coincide add up)."""
        keys = (mapping[self.pred.astype(np.int64)].astype(np.uint64) << SHIFT) | self.truth
        merged = Contingency()
        merged._keys, merged._counts = _reduce(keys, self.counts)
        return merged

    def pixels(self) -> int:
        return int(self.counts.sum())


def _reduce(keys: Array, counts: Array) -> tuple[Array, Array]:
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts).astype(np.int64)


def of_arrays(pred: Array, truth: Array) -> Contingency:
    """The table of two whole label arrays (in memory) of the same shape."""
    table = Contingency()
    table.add(checked_ids(np.asarray(pred), Path("prediction")), checked_ids(np.asarray(truth), Path("truth")))
    return table


def of_files(pred_path: Path, truth_path: Path, rows: int | None = None,
             components: int | None = None) -> Contingency:
    """The table of two label image files, read band by band. `components` (4 or 8): the prediction is a
    semantic mask whose foreground is labelled by connected components of that connectivity first."""
    from tilecast.client.evaluate.components import BandLabeller

    pred, truth = open_labels(pred_path), open_labels(truth_path)
    try:
        table = Contingency()
        labeller = BandLabeller(components) if components else None
        # labelling joins components across band borders only: it needs full-width bands
        for p, t in paired_blocks(pred, truth, rows, full_width=labeller is not None):
            ids = checked_ids(p, pred_path)
            if labeller is not None:
                ids = labeller.label(ids != 0)
            table.add(ids, checked_ids(t, truth_path))
        return table if labeller is None else table.relabel_pred(labeller.final_ids())
    finally:
        pred.close()
        truth.close()
