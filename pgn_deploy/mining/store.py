"""The output folder as a resumable store of per-frame rows.

Layout of ``--out``:

* ``mine.json``: the :class:`~pgn_deploy.mining.frame_scoring.MiningRule` every row was made
  with (model sha256, map, threshold, min_area). A run with another rule is refused unless
  ``force``, which deletes the earlier results first.
* ``parts/``: the rows, in Parquet files committed whole (:func:`write_part`: a temporary file,
  then a rename), one per batch: the local engine's as ``local-<run>-<n>.parquet``, each Ray
  actor's under ``parts/ray-<run>/``. A file cut short by a kill cannot be read: it is deleted
  when the store is next loaded, so an interrupted run loses only the frames in flight. Loading
  keeps the first successful row per ``(source, frame)``; a frame that only failed keeps its
  latest failure, and is tried again by the next run.
* ``frames.parquet``, ``instances.parquet``, ``failures.parquet``, ``overlays/``,
  ``index.html``: derived from the parts at the end of each run (:mod:`pgn_deploy.mining.output`).
"""
from __future__ import annotations

import itertools
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import ArtifactExistsError, BadInputError, atomic_write, atomic_write_text, require
from pgn_deploy.mining.frame_scoring import INSTANCE_FIELDS, MiningRule
from pgn_deploy.mining.sources import FrameRef

MANIFEST = "mine.json"
PARTS = "parts"
DERIVED = ("frames.parquet", "instances.parquet", "failures.parquet", "index.html", "overlays")
RULE_KEYS = ("model_sha256", "score", "threshold", "min_area")


def row_schema():  # -> pyarrow.Schema
    """The Arrow schema of a part row (see :func:`pgn_deploy.mining.frame_scoring.score_frames`)."""
    pa = require("pyarrow", "pgn-mine's Parquet output")
    lists = [(f"instance_{key}", pa.list_(pa.float64() if key.endswith("score") else pa.int64()))
             for key in INSTANCE_FIELDS]
    return pa.schema([("source", pa.string()), ("frame", pa.int64()), ("height", pa.int64()),
                      ("width", pa.int64()), ("score", pa.float64()), ("instances", pa.int64()), *lists,
                      ("model_sha256", pa.string()), ("worker", pa.string()), ("error", pa.string())])


def rows_to_table(rows: Sequence[dict[str, Any]]):  # -> pyarrow.Table
    """Rows (dicts with the :func:`row_schema` fields) as an Arrow table."""
    pa = require("pyarrow", "pgn-mine's Parquet output")
    return pa.Table.from_pylist(list(rows), schema=row_schema())


def write_part(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` as one Parquet part at ``path``, atomically (all of them or none)."""
    pq = require("pyarrow.parquet", "pgn-mine's Parquet output")
    table = rows_to_table(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class MiningStore:
    """The output folder of one rule. ``open`` checks (or writes) the manifest; ``commit`` adds a
    part; ``load`` reads every readable part, deduplicated."""

    def __init__(self, out_dir: Path, rule: MiningRule) -> None:
        self.out_dir = out_dir
        self.rule = rule
        self.parts = out_dir / PARTS
        self.run_id = uuid.uuid4().hex[:12]
        self._sequence = itertools.count(1)  # thread-safe: commits come from several threads
        self.discarded: list[str] = []

    @classmethod
    def open(cls, out_dir: str | Path, rule: MiningRule, force: bool = False) -> MiningStore:
        """The store at ``out_dir`` (created if missing) for ``rule``.

        Refused without ``force`` (:class:`ArtifactExistsError`): a folder mined with another
        rule, or one holding a ``frames.parquet`` without a manifest. With ``force`` the earlier
        results (manifest, parts, derived files) are deleted first.
        """
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise BadInputError(f"{out_dir}: exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        store = cls(out_dir, rule)
        conflict = store._conflict()
        if conflict and not force:
            raise ArtifactExistsError(f"{out_dir}: {conflict}; pass --force to start over (deletes its results)")
        if conflict:
            store._clear()
        if not (out_dir / MANIFEST).exists():
            atomic_write_text(out_dir / MANIFEST, json.dumps(rule.to_json(), indent=2, sort_keys=True) + "\n")
        store.parts.mkdir(exist_ok=True)
        return store

    def _conflict(self) -> str | None:
        manifest = self.out_dir / MANIFEST
        if not manifest.exists():
            return "it holds mining results without mine.json" if (self.out_dir / "frames.parquet").exists() else None
        try:
            earlier = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return "its mine.json is unreadable"
        mine = self.rule.to_json()
        changed = [key for key in RULE_KEYS if earlier.get(key) != mine[key]]
        if not changed:
            return None
        if "model_sha256" in changed:
            return f"it was mined with another model (sha256 {str(earlier.get('model_sha256'))[:12]}...)"
        return "it was mined with another " + ", ".join(
            f"{key} ({earlier.get(key)!r}, now {mine[key]!r})" for key in changed)

    def _clear(self) -> None:
        for name in (MANIFEST, PARTS, *DERIVED):
            path = self.out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def new_ray_folder(self) -> Path:
        """A new folder under ``parts/`` for one Ray run's parts (the actors write into it)."""
        folder = self.parts / f"ray-{self.run_id}"
        folder.mkdir(exist_ok=True)
        return folder

    def commit(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` as one part file (:func:`write_part`); safe from several threads."""
        if rows:
            write_part(self.parts / f"local-{self.run_id}-{next(self._sequence):06d}.parquet", rows)

    # ------------------------------------------------------------------ reading
    def _part_files(self) -> list[Path]:
        return sorted(p for p in self.parts.rglob("*.parquet") if not p.name.startswith("."))

    def load(self, compact: bool = False):  # -> pyarrow.Table
        """Every readable part's rows: the first success per (source, frame), else the latest
        failure. Unreadable parts (cut short by a kill) are deleted and named in ``discarded``.
        With ``compact`` the result replaces the parts as one file (a kill in between leaves
        duplicates, which loading removes)."""
        pa = require("pyarrow", "pgn-mine's Parquet output")
        pq = require("pyarrow.parquet", "pgn-mine's Parquet output")
        schema = row_schema()
        tables, files = [], self._part_files()
        for path in files:
            try:
                tables.append(pq.read_table(path, schema=schema))
            except (OSError, ValueError):
                self.discarded.append(str(path))
                path.unlink(missing_ok=True)
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        table = table.take(_kept_rows(table))
        if compact and len(files) > 1:
            kept = self.parts / f"compact-{self.run_id}.parquet"
            atomic_write(kept, lambda tmp: pq.write_table(table, tmp))
            for path in files:
                if path != kept:
                    path.unlink(missing_ok=True)
            for folder in sorted(self.parts.glob("ray-*"), reverse=True):
                shutil.rmtree(folder, ignore_errors=True)
        return table

    def done(self) -> set[FrameRef]:
        """The frames with a successful row (skipped by the next run)."""
        table = self.load()
        ok = [error is None for error in table.column("error").to_pylist()]
        return {FrameRef(s, f) for s, f, good in zip(table.column("source").to_pylist(),
                                                      table.column("frame").to_pylist(), ok) if good}


def _kept_rows(table):  # -> pyarrow.Array of row indices
    """Row indices, ascending: the first success per (source, frame), else its last failure."""
    pa = require("pyarrow", "pgn-mine's Parquet output")
    pc = require("pyarrow.compute", "pgn-mine's Parquet output")
    keys = ["source", "frame"]
    indexed = table.select([*keys, "error"]).append_column("row", pa.array(np.arange(table.num_rows), pa.int64()))
    failed = pc.is_valid(indexed.column("error"))
    firsts = indexed.filter(pc.invert(failed)).group_by(keys, use_threads=False).aggregate([("row", "min")])
    lasts = indexed.filter(failed).group_by(keys, use_threads=False).aggregate([("row", "max")])
    lasts = lasts.join(firsts, keys=keys, join_type="left anti")  # a success replaces every failure
    rows = pa.chunked_array([*firsts.column("row_min").chunks, *lasts.column("row_max").chunks], pa.int64())
    return pc.take(rows, pc.sort_indices(rows))
