"""The paper's Tables 2 and 3 for one OoD split: every score map evaluated in the same two passes.

The metrics are those of ``pgn-metrics`` (:mod:`~pgn_deploy.eval.metrics.pixel`,
:mod:`~pgn_deploy.eval.metrics.components`), fed frame by frame for all maps at once:

1. pass 1 (:meth:`OODSplit.add_pixels`): each frame's maps are reduced into the pixel-level
   accumulators; :meth:`OODSplit.finish_pixels` gives AuPRC, AuROC, FPR95 and t* per map;
2. pass 2 (:meth:`OODSplit.add_components`): each frame's components at that map's t* give
   sIoU, PPV and mean F1.

Nothing but the accumulated counts stays in memory between frames.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.components import ComponentAccumulator, get_track
from pgn_deploy.eval.metrics.ood import OODResult
from pgn_deploy.eval.metrics.pixel import PixelAccumulator, PixelResult
from pgn_deploy.eval.metrics.plots import plot_pixel_curves
from pgn_deploy.eval.paper import published
from pgn_deploy.eval.paper.report import EvalReport, MethodInfo, Table

TABLE_COLUMNS = ("AuPRC", "FPR95", "sIoU", "PPV", "mean_F1")
"""The columns of the paper's Tables 2/3 (percent in the tables, fractions in JSON)."""


class OODSplit:
    """Pixel and component metrics of several score maps on one split (see module doc)."""

    def __init__(self, names: Sequence[str], track: str, binning: str = "exact") -> None:
        if not names:
            raise BadInputError("no score maps to evaluate")
        self.names = list(names)
        self.track = get_track(track)
        self.frames = 0
        self._pixels = {name: PixelAccumulator(binning) for name in self.names}
        self._components = {name: ComponentAccumulator(self.track) for name in self.names}
        self._pixel_results: dict[str, PixelResult] | None = None

    def add_pixels(self, frame_id: str, maps: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
        """Pass 1: add one frame (maps H x W float, labels H x W in {0, 1, 255})."""
        if self._pixel_results is not None:
            raise RuntimeError("add_pixels after finish_pixels")
        for name in self.names:
            self._pixels[name].add(maps[name], labels, where=f"{frame_id} ({name})")
        self.frames += 1

    def finish_pixels(self) -> dict[str, PixelResult]:
        """Pixel metrics of every map (ends pass 1; t* of each map is then known)."""
        if self._pixel_results is None:
            self._pixel_results = {name: acc.result() for name, acc in self._pixels.items()}
        return self._pixel_results

    def add_components(self, frame_id: str, maps: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
        """Pass 2: one frame's components of every map at its t*."""
        pixels = self.finish_pixels()
        for name in self.names:
            self._components[name].add(maps[name], labels, pixels[name].threshold, where=f"{frame_id} ({name})")

    def results(self) -> dict[str, OODResult]:
        """Every map's :class:`OODResult` (both passes must be done)."""
        pixels = self.finish_pixels()
        done = {acc.frames for acc in self._components.values()}
        if done != {self.frames}:
            raise RuntimeError(f"pass 2 saw {done} frames, pass 1 saw {self.frames}")
        return {name: OODResult(pixel=pixels[name], components=self._components[name].result(),
                                frames=self.frames) for name in self.names}


def table_row(result: OODResult) -> dict[str, float | None]:
    """One row of Tables 2/3 in percent (None where undefined: no component in the split)."""
    values = result.to_json()
    return {column: None if values[column] is None else 100.0 * values[column] for column in TABLE_COLUMNS}


def ood_report(header: dict[str, Any], methods: dict[str, MethodInfo], results: Mapping[str, OODResult],
               timing: dict[str, dict[str, float | int]], extra: Mapping[str, Any], notes: list[str]) -> EvalReport:
    """The report of an OoD split: the Tables 2/3 row of every map, the paper's published rows
    of the same dataset beside them, PR and ROC plots (:func:`plot_pixel_curves`)."""
    kind = header["dataset"]["kind"]
    first = next(iter(results.values()))
    track = first.components.track
    tables = [Table(f"OoD segmentation ({kind}, {track.name} track), percent", TABLE_COLUMNS,
                    {name: table_row(result) for name, result in results.items()},
                    note=f"Pixel level: {first.pixel.method}. Components at each map's best-F1 threshold "
                         f"t*; min_pred {track.min_pred} px, min_gt {track.min_gt} px.")]
    if kind in published.OOD_TABLES:
        tables.append(Table(f"Published: {published.OOD_SOURCES[kind]}, percent", published.OOD_COLUMNS,
                            {k: dict(zip(published.OOD_COLUMNS, v)) for k, v in published.OOD_TABLES[kind].items()},
                            digits=1, note="The paper's numbers (WideResNet38 DeepLabV3+ trained on Cityscapes, "
                                           "official benchmark), for comparison only."))

    def draw(folder: Path) -> dict[str, Path]:
        return plot_pixel_curves({methods[name].label: result.pixel for name, result in results.items()}, folder,
                                 subject=f"{kind}, {track.name} track")

    details = {"maps": {name: result.to_json() for name, result in results.items()}, **extra}
    return EvalReport(header, methods, timing, tables, details, ["pr", "roc"], draw, notes)
