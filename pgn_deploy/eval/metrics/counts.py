"""Exact per-value sums over float32 values, accumulated frame by frame.

The pixel metrics (and ECE, AuSE) of a split need every distinct score value with, for each
value, how many pixels of each kind carry it. A split is about 10^9 pixels, too many to sort at
once. Instead each frame is reduced, per column (e.g. label 0 / label 1), to its distinct values
and their counts or weight sums (one sort of the frame), and added into :class:`Float32Counts`:

* every float32 maps to a 32-bit key whose unsigned order is the numeric order
  (:func:`sortable_keys`; -0.0 counts as 0.0);
* **dense part**: the top 24 bits of a key pick a *slot* of 256 consecutive keys. A slot that
  receives at least ``PROMOTE_KEYS`` distinct keys in one addition gets a dense block of sums
  (256 x n_columns float64; counts are exact up to 2^53); later additions to it are indexed
  writes. Blocks are handed out in order from a table reserved up front (2^18 blocks of
  virtual memory, doubled when full), so only the blocks in use take real memory;
* **sparse part**: the keys of the other slots are kept as sorted runs of (cell, sum) with
  ``cell = key << 8 | column``, merged pairwise whenever a run is no longer than half the one
  before it (so about log2(frames) runs exist); a merge moves slots that became crowded to the
  dense part.

Memory grows with the number of distinct float32 values, never with the number of pixels;
adding a frame costs one sort of it plus indexing. The result is exact for the float32 values:
nothing is binned.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_LOW_BITS = 8
_SLOT = 1 << _LOW_BITS
_HIGH_SIZE = 1 << (32 - _LOW_BITS)
_SIGN = np.uint32(0x80000000)
_COLUMN_BITS = np.uint64(8)
_CHUNK_SLOTS = 4096
_RESERVED_SLOTS = 1 << 18
PROMOTE_KEYS = 16
MAX_COLUMNS = 1 << 8

Run = tuple[np.ndarray, np.ndarray]


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


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Indices where a new value starts in a sorted array."""
    if sorted_values.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))


def unique_counts(keys: np.ndarray) -> Run:
    """Sorted distinct ``keys`` and how often each occurs (float64)."""
    keys = np.sort(keys)
    starts = _run_starts(keys)
    return keys[starts], np.diff(np.append(starts, keys.size)).astype(np.float64)


def summarize_values(values: np.ndarray, column: np.ndarray | int, n_columns: int,
                     weights: np.ndarray | None = None) -> list[Run]:
    """One addition reduced per column: ``[(sorted unique keys, sums), ...]`` (n_columns runs).

    Without ``weights`` each value counts 1 in its ``column`` (per-value array or one index);
    with ``weights`` (N x n_columns) every column sums its weight. Pure: thread-safe.
    """
    keys = sortable_keys(values)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        unique, inverse = np.unique(keys, return_inverse=True)
        return [(unique, np.bincount(inverse, weights[:, c], minlength=unique.size))
                for c in range(n_columns)]
    if np.ndim(column) == 0:
        runs = [(np.zeros(0, np.uint32), np.zeros(0))] * n_columns
        runs[int(column)] = unique_counts(keys)
        return runs
    column = np.asarray(column)
    return [unique_counts(keys[column == c]) for c in range(n_columns)]


def merge_runs(runs: list[Run]) -> Run:
    """Merge sorted runs of (uint64 cells, sums) into one with unique cells (sums added)."""
    cells = np.concatenate([r[0] for r in runs])
    sums = np.concatenate([r[1] for r in runs])
    order = np.argsort(cells, kind="stable")
    cells, sums = cells[order], sums[order]
    starts = _run_starts(cells)
    return cells[starts], (np.add.reduceat(sums, starts) if starts.size else sums)


class Float32Counts:
    """Exact sums per distinct float32 value and column, filled addition by addition (module doc).

    :meth:`add` takes values with a column per value (counting) or weights per column;
    :meth:`add_summary` takes the output of :func:`summarize_values` (computed elsewhere,
    e.g. in a worker thread). :meth:`result` gives the distinct values ascending with sums.
    """

    def __init__(self, n_columns: int) -> None:
        if not 1 <= n_columns <= MAX_COLUMNS:
            raise ValueError(f"n_columns must be in 1..{MAX_COLUMNS}")
        self.n_columns = n_columns
        self._slot_of_high = np.zeros(_HIGH_SIZE, dtype=np.int32)  # slot + 1; 0 = sparse
        self._high_of_slot = np.zeros(0, dtype=np.int64)
        self._table = np.zeros(_RESERVED_SLOTS * _SLOT * n_columns)  # untouched pages cost nothing
        self._slots = 0
        self._runs: list[Run] = []
        self.totals = np.zeros(n_columns)

    @property
    def nbytes(self) -> int:
        """Memory in use by the dense blocks, their index and the sparse runs, in bytes."""
        sparse = sum(c.nbytes + s.nbytes for c, s in self._runs)
        dense = self._slots * _SLOT * self.n_columns * self._table.itemsize
        return dense + self._slot_of_high.nbytes + self._high_of_slot.nbytes + sparse

    def add(self, values: np.ndarray, column: np.ndarray | int = 0, weights: np.ndarray | None = None) -> None:
        """Add float32 ``values`` (1-D); see :func:`summarize_values` for ``column`` / ``weights``."""
        self.add_summary(summarize_values(values, column, self.n_columns, weights))

    def add_summary(self, summary: list[Run]) -> None:
        """Add the per-column runs of :func:`summarize_values`."""
        for column, (keys, sums) in enumerate(summary):
            if keys.size:
                self._add_keys(keys, sums, column)
                self.totals[column] += sums.sum()

    def _add_keys(self, keys: np.ndarray, sums: np.ndarray, column: int) -> None:
        slots = self._slots_promoting_crowded(keys >> _LOW_BITS)
        free = slots < 0
        if free.any():
            self._add_run(((keys[free].astype(np.uint64) << _COLUMN_BITS) | np.uint64(column), sums[free]))
            dense = ~free
            keys, sums, slots = keys[dense], sums[dense], slots[dense]
        self._scatter(slots, keys, column, sums)

    def _slots_promoting_crowded(self, high: np.ndarray) -> np.ndarray:
        """Dense slot of each (sorted) ``high`` key part, -1 for sparse ones; free slots met
        at least PROMOTE_KEYS times get a dense block first."""
        slots = self._slot_of_high[high] - 1
        free = slots < 0
        if free.any():
            free_high = high[free]
            starts = _run_starts(free_high)
            sizes = np.diff(np.append(starts, free_high.size))
            crowded = free_high[starts[sizes >= PROMOTE_KEYS]]
            if crowded.size:
                self._allocate(crowded)
                slots = self._slot_of_high[high] - 1
        return slots

    def _scatter(self, slots: np.ndarray, keys: np.ndarray, columns: np.ndarray | int, sums: np.ndarray) -> None:
        """Add ``sums`` to the dense table (each (key, column) at most once per call)."""
        flat = slots.astype(np.int64)
        flat *= _SLOT
        flat += keys & (_SLOT - 1)
        flat *= self.n_columns
        flat += columns
        self._table[flat] += sums

    def _add_run(self, run: Run) -> None:
        self._runs.append(run)
        while len(self._runs) >= 2 and self._runs[-2][0].size <= 2 * self._runs[-1][0].size:
            cells, sums = merge_runs(self._runs[-2:])
            del self._runs[-2:]
            remaining = self._cells_to_dense(cells, sums)
            if remaining[0].size:
                self._runs.append(remaining)

    def _cells_to_dense(self, cells: np.ndarray, sums: np.ndarray) -> Run:
        """Move the cells of slots that are dense (or crowded now) into the table."""
        keys = (cells >> _COLUMN_BITS).astype(np.uint32)
        slots = self._slots_promoting_crowded(keys >> _LOW_BITS)
        dense = slots >= 0
        if dense.any():
            columns = (cells[dense] & np.uint64(MAX_COLUMNS - 1)).astype(np.int64)
            self._scatter(slots[dense], keys[dense], columns, sums[dense])
        return cells[~dense], sums[~dense]

    def _allocate(self, highs: np.ndarray) -> None:
        needed = self._slots + highs.size
        block = _SLOT * self.n_columns
        capacity = self._table.size // block
        if needed > capacity:
            grown = np.zeros(max(needed, 2 * capacity) * block)
            grown[: self._slots * block] = self._table[: self._slots * block]
            self._table = grown
        self._slot_of_high[highs] = np.arange(self._slots + 1, needed + 1, dtype=np.int32)
        self._high_of_slot = np.concatenate([self._high_of_slot, highs.astype(np.int64)])
        self._slots = needed

    def _merge_sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """Merge the sparse runs into one (moving crowded slots to the dense part) as rows:
        (keys ascending, sums n x n_columns)."""
        if not self._runs:
            return np.zeros(0, np.uint32), np.zeros((0, self.n_columns))
        cells, sums = self._cells_to_dense(*merge_runs(self._runs))
        self._runs = [(cells, sums)] if cells.size else []
        keys = (cells >> _COLUMN_BITS).astype(np.uint32)
        starts = _run_starts(keys)
        first = np.zeros(keys.size, dtype=bool)
        first[starts] = True
        rows = np.zeros((starts.size, self.n_columns))
        rows[np.cumsum(first) - 1, (cells & np.uint64(MAX_COLUMNS - 1)).astype(np.int64)] = sums
        return keys[starts], rows

    def chunks(self, descending: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The distinct values with their sums, in order, a few million at a time.

        Yields ``(values float32, sums n x n_columns)`` chunks, ascending (or descending)
        over all chunks; values whose sums are all zero are left out.
        """
        sparse_keys, sparse_rows = self._merge_sparse()
        order = np.argsort(self._high_of_slot)
        table = self._table[: self._slots * _SLOT * self.n_columns].reshape(self._slots, _SLOT, self.n_columns)
        starts = list(range(0, order.size, _CHUNK_SLOTS)) or [0]
        bounds = [0] + [int(self._high_of_slot[order[i]]) << _LOW_BITS for i in starts[1:]] + [1 << 32]
        sparse_at = np.searchsorted(sparse_keys, bounds)
        pieces = range(len(starts))
        for i in reversed(pieces) if descending else pieces:
            chunk = order[starts[i]:starts[i] + _CHUNK_SLOTS]
            rows = table[chunk].reshape(-1, self.n_columns)
            keys = ((self._high_of_slot[chunk, None] << _LOW_BITS) + np.arange(_SLOT)).ravel().astype(np.uint32)
            extra = slice(sparse_at[i], sparse_at[i + 1])
            if extra.start != extra.stop:
                at = np.searchsorted(keys, sparse_keys[extra])
                keys, rows = np.insert(keys, at, sparse_keys[extra]), np.insert(rows, at, sparse_rows[extra], axis=0)
            present = rows.any(axis=1)
            keys, rows = keys[present], rows[present]
            if descending:
                keys, rows = keys[::-1], rows[::-1]
            if keys.size:
                yield values_of_keys(keys), rows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, sums)``: all distinct float32 values ascending with their sums (n x n_columns)."""
        parts = list(self.chunks())
        if not parts:
            return np.zeros(0, np.float32), np.zeros((0, self.n_columns))
        return np.concatenate([v for v, _ in parts]), np.concatenate([r for _, r in parts])
