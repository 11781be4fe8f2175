"""Exact per-value sums over float32 values, accumulated frame by frame.

The pixel metrics (and ECE, AuSE) of a split need every distinct score value with, for each
value, how many pixels of each kind carry it. A split is about 10^9 pixels, too many to sort at
once; instead each frame is reduced to its distinct values (one sort of the frame) and added
into :class:`Float32Counts`, a two-level table indexed by the float32 bit pattern:

* every float32 maps to a 32-bit key whose unsigned order is the numeric order
  (:func:`sortable_keys`; -0.0 counts as 0.0);
* the top 24 bits of the key pick a *slot*, allocated on first use; a slot holds the 256
  consecutive keys that share those bits, each with ``n_columns`` sums (float64; counts are
  exact up to 2^53).

Memory grows with the number of distinct float32 values seen (about 2 KiB per 256-key slot and
column pair), never with the number of pixels; adding a frame costs one sort of that frame.
The result is exact for float32 scores: nothing is binned or approximated.
"""
from __future__ import annotations

import numpy as np

from pgn_deploy.contract import BadInputError

_LOW_BITS = 8
_SLOT = 1 << _LOW_BITS
_HIGH_SIZE = 1 << (32 - _LOW_BITS)
_SIGN = np.uint32(0x80000000)


def sortable_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 ``values`` whose unsigned order is the numeric order.

    -0.0 and 0.0 share a key; NaN must not occur (the callers reject it before).
    """
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def values_of_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`sortable_keys`: the float32 values of uint32 ``keys``."""
    keys = np.asarray(keys, dtype=np.uint32)
    return np.where(keys & _SIGN, keys & ~_SIGN, ~keys).view(np.float32)


def count_cells(keys: np.ndarray, column: np.ndarray | int, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one frame to its distinct (key, column) cells and how many samples fall in each.

    ``keys``: uint32 from :func:`sortable_keys`; ``column``: per-sample column index (or one
    index for all). Returns ``cells`` (sorted unique uint64, ``key * n_columns + column``) and
    ``counts`` (float64). Pure function: safe to run in worker threads.
    """
    cells = keys.astype(np.uint64) * np.uint64(n_columns) + np.asarray(column, dtype=np.uint64)
    cells.sort()
    if cells.size == 0:
        return cells, np.zeros(0)
    starts = np.flatnonzero(np.concatenate(([True], cells[1:] != cells[:-1])))
    counts = np.diff(np.append(starts, cells.size)).astype(np.float64)
    return cells[starts], counts


def sum_cells(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`count_cells` but summing ``weights`` (N x n_columns) per key and column."""
    weights = np.asarray(weights, dtype=np.float64)
    n_columns = weights.shape[1]
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.stack([np.bincount(inverse, weights[:, c], minlength=unique.size)
                     for c in range(n_columns)], axis=1)
    cells = unique.astype(np.uint64)[:, None] * np.uint64(n_columns) + np.arange(n_columns, dtype=np.uint64)
    return cells.ravel(), sums.ravel()


class Float32Counts:
    """Exact sums per distinct float32 value and column, filled frame by frame (see module doc).

    ``add(values, column=...)`` counts samples into a column (e.g. the label 0/1 of each
    pixel); ``add(values, weights=...)`` adds a weight per sample and column.
    :meth:`result` returns the distinct values in ascending order with their sums.
    """

    def __init__(self, n_columns: int) -> None:
        if n_columns < 1:
            raise ValueError("n_columns must be >= 1")
        self.n_columns = n_columns
        self._slot_of_high = np.full(_HIGH_SIZE, -1, dtype=np.int32)
        self._high_of_slot = np.zeros(0, dtype=np.int64)
        self._table = np.zeros(0, dtype=np.float64)
        self._slots = 0

    @property
    def nbytes(self) -> int:
        """Memory held by the table and its index, in bytes."""
        return self._table.nbytes + self._slot_of_high.nbytes + self._high_of_slot.nbytes

    def add(self, values: np.ndarray, column: np.ndarray | int = 0, weights: np.ndarray | None = None) -> None:
        """Add float32 ``values`` (1-D): counted into ``column``, or summing ``weights`` (N x n_columns)."""
        keys = sortable_keys(values)
        if weights is None:
            self.add_cells(*count_cells(keys, column, self.n_columns))
        else:
            self.add_cells(*sum_cells(keys, weights))

    def add_cells(self, cells: np.ndarray, sums: np.ndarray) -> None:
        """Add unique ``cells`` (from :func:`count_cells` / :func:`sum_cells`) with their ``sums``."""
        if cells.size == 0:
            return
        n = np.uint64(self.n_columns)
        keys = cells // n
        columns = cells - keys * n
        high = (keys >> np.uint64(_LOW_BITS)).astype(np.int64)
        slots = self._slot_of_high[high]
        missing = slots < 0
        if missing.any():
            self._allocate(np.unique(high[missing]))
            slots = self._slot_of_high[high]
        flat = (slots.astype(np.int64) * _SLOT + (keys & np.uint64(_SLOT - 1)).astype(np.int64)) * self.n_columns
        self._table[flat + columns.astype(np.int64)] += sums

    def _allocate(self, highs: np.ndarray) -> None:
        needed = self._slots + highs.size
        capacity = self._table.size // (_SLOT * self.n_columns)
        if needed > capacity:
            grown = np.zeros(max(needed, 2 * capacity, 64) * _SLOT * self.n_columns)
            grown[: self._table.size] = self._table
            self._table = grown
        self._slot_of_high[highs] = np.arange(self._slots, needed, dtype=np.int32)
        self._high_of_slot = np.concatenate([self._high_of_slot, highs.astype(np.int64)])
        self._slots = needed

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, sums)``: distinct float32 values ascending, float64 sums (len x n_columns).

        Values whose sums are all zero are left out (they were never added, or added with
        zero weight, which changes no metric).
        """
        order = np.argsort(self._high_of_slot)
        used = self._table[: self._slots * _SLOT * self.n_columns].reshape(self._slots, _SLOT, self.n_columns)
        sums = used[order].reshape(-1, self.n_columns)
        keys = ((self._high_of_slot[order, None] << _LOW_BITS) + np.arange(_SLOT)).ravel()
        present = sums.any(axis=1)
        return values_of_keys(keys[present]), sums[present]


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise :class:`BadInputError` naming ``what`` if ``values`` holds NaN or infinity."""
    if not np.isfinite(values).all():
        bad = np.count_nonzero(~np.isfinite(values))
        raise BadInputError(f"{what}: {bad} value(s) are NaN or infinite; scores must be finite")
