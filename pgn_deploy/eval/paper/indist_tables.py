"""The paper's Table 1 and Figure 3 on Cityscapes val: calibration, sparsification, meta models.

One pass over the frames (the softmax is needed and never cached, so every run infers); per
frame and evaluated map (the metrics: :mod:`~pgn_deploy.eval.metrics.calibration`,
:mod:`~pgn_deploy.eval.metrics.metaseg`):

* **ECE** (10 bins): confidence ``1 - s`` for the 1 - max-softmax maps (``msp``, ``ens_msp``),
  else ``1 - `` the score min-max normalised over the split (as the published code);
  correctness: the predicted class (with TTA: the argmax of the averaged softmax) is the
  ground truth. Void pixels are left out.
* **AuSE** (Brier error, 100 steps) and ``ause_published`` (the published code's curve of mean
  uncertainty), with the map as the uncertainty.
* **Segments** (MetaSeg): the features of every segment of the predicted class map with the
  maps ``msp``, ``entropy`` and every PGN map as extra feature groups, and its IoU.

Figure 3 then compares meta classification (IoU = 0 vs > 0, AuROC) and meta regression (IoU,
R^2) from these feature sets (:data:`FIGURE3_SETS`), k-fold cross validation grouped by image.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, parse_map_name
from pgn_deploy.eval.metrics.calibration import AuSEResult, CalibrationAccumulator, ECEResult, SparsificationAccumulator
from pgn_deploy.eval.metrics.metaseg import (
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    METASEG,
    MetaResult,
    SegmentTable,
    meta_classification,
    meta_regression,
    segment_features,
)
from pgn_deploy.eval.paper import published
from pgn_deploy.eval.paper.report import EvalReport, MethodInfo, Table, figure, method_label

CONFIDENCE_MAPS = ("msp", "ens_msp")
"""Maps that are 1 - a confidence: their ECE takes ``1 - s`` as the confidence as it is."""
SEGMENT_BASELINES = ("msp", "entropy")
TABLE1_COLUMNS = ("ECE", "AuSE", "AuSE_published")
FIGURE3_COLUMNS = ("AuROC", "R2")


def figure3_sets(maps: Sequence[str]) -> dict[str, list[str]]:
    """Figure 3's feature sets (name -> MetaSeg feature groups) that ``maps`` allow, in the
    paper's order: max softmax, entropy, MetaSeg, PGN_oh, PGN_uni (last layer), then with
    penultimate-layer maps present the last layer's PGN maps and the penultimate layer's on
    their own, then all PGN maps (both layers) and MetaSeg + all PGN."""
    parsed = {m: parse_map_name(m) for m in maps}
    last = [m for m, v in parsed.items() if v is not None and v[2] == "last"]
    penultimate = [m for m, v in parsed.items() if v is not None and v[2] == "penultimate"]
    oh = [m for m in last if parsed[m][0] == "oh"]
    uni = [m for m in last if parsed[m][0] == "uni"]
    pgn = [m for m in maps if parsed[m] is not None]
    sets = {"msp": ["msp"] if "msp" in maps else [], "entropy": ["entropy"] if "entropy" in maps else [],
            METASEG: [METASEG], "pgn_oh": oh, "pgn_uni": uni,
            "pgn_last": last if penultimate and last else [], "pgn_penultimate": penultimate,
            "pgn": pgn if (oh and uni) or penultimate else [],
            "metaseg+pgn": [METASEG, *pgn] if pgn else []}
    return {name: groups for name, groups in sets.items() if groups}


@dataclasses.dataclass(frozen=True)
class Undefined:
    """A metric that the data do not define (e.g. the ECE of a constant map), and why."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        """``{"undefined": reason}``."""
        return {"undefined": self.reason}


def _defined(compute: Callable[[], Any]) -> Any:
    """``compute()``, or :class:`Undefined` with the reason when the metric's definition fails."""
    try:
        return compute()
    except BadInputError as exc:
        return Undefined(str(exc))


def _value(result: Any, attribute: str) -> float | None:
    return None if isinstance(result, Undefined) else getattr(result, attribute)


@dataclasses.dataclass(frozen=True)
class InDistResult:
    """Table 1 (per map) and Figure 3 (per feature set) of one split; a metric the data do not
    define is :class:`Undefined`."""

    ece: dict[str, ECEResult | Undefined]
    ause: dict[str, AuSEResult | Undefined]
    meta_classification: dict[str, MetaResult | Undefined]
    meta_regression: dict[str, MetaResult | Undefined]
    segments: int
    frames: int

    def to_json(self) -> dict[str, Any]:
        """Per map its ECE and AuSE, per Figure 3 feature set its meta classification and regression,
        and the segment and frame counts, as a JSON-ready dict."""
        return {
            "maps": {name: {"ece": self.ece[name].to_json(), "ause": self.ause[name].to_json()} for name in self.ece},
            "figure3": {name: {"classification": self.meta_classification[name].to_json(),
                               "regression": self.meta_regression[name].to_json()}
                        for name in self.meta_classification},
            "segments": self.segments, "frames": self.frames,
        }


class InDistSplit:
    """Streams Cityscapes frames into Table 1 and the segment table of Figure 3 (module doc)."""

    def __init__(self, maps: Sequence[str], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> None:
        if not maps:
            raise BadInputError("no score maps to evaluate")
        self.maps, self.folds, self.seed = list(maps), folds, seed
        self.segment_maps = [m for m in self.maps if m.startswith("pgn_") or m in SEGMENT_BASELINES]
        self._ece = {m: CalibrationAccumulator("none" if m in CONFIDENCE_MAPS else "minmax") for m in self.maps}
        self._ause = {m: SparsificationAccumulator() for m in self.maps}
        self._tables: list[SegmentTable] = []

    def add(self, frame_id: str, maps: Mapping[str, np.ndarray], pred: np.ndarray, probs: np.ndarray,
            gt: np.ndarray) -> None:
        """One frame: maps H x W, predicted classes H x W, softmax C x H x W, train ids H x W."""
        if gt.shape != pred.shape:
            raise BadInputError(f"{frame_id}: the label is {gt.shape[0]}x{gt.shape[1]} but the prediction "
                                f"{pred.shape[0]}x{pred.shape[1]}")
        for name in self.maps:
            where = f"{frame_id} ({name})"
            score = maps[name]
            confidence = np.clip(1.0 - score, 0.0, 1.0) if name in CONFIDENCE_MAPS else score
            self._ece[name].add(confidence, pred, gt, where)
            self._ause[name].add(score, probs, gt, where)
        self._tables.append(segment_features(probs, gt, {m: maps[m] for m in self.segment_maps},
                                             image=len(self._tables)))

    def result(self) -> InDistResult:
        """Table 1 and Figure 3 of every frame added; raises BadInputError when none was."""
        if not self._tables:
            raise BadInputError("no frames were added")
        table = SegmentTable.concat(self._tables)
        sets = figure3_sets(self.segment_maps)
        return InDistResult(
            ece={m: _defined(acc.result) for m, acc in self._ece.items()},
            ause={m: _defined(acc.result) for m, acc in self._ause.items()},
            meta_classification={s: _defined(lambda g=g: meta_classification(table, g, self.folds, self.seed))
                                 for s, g in sets.items()},
            meta_regression={s: _defined(lambda g=g: meta_regression(table, g, self.folds, self.seed))
                             for s, g in sets.items()},
            segments=len(table), frames=len(self._tables),
        )


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def indist_report(header: dict[str, Any], methods: dict[str, MethodInfo], result: InDistResult,
                  timing: dict[str, dict[str, float | int]], notes: list[str], folds: int,
                  seed: int) -> EvalReport:
    """Table 1 (with the published Table 1 beside it), Figure 3 as a table and a bar chart,
    and the sparsification curves."""
    table1 = {m: {"ECE": _value(result.ece[m], "ece"), "AuSE": _value(result.ause[m], "ause"),
                  "AuSE_published": _value(result.ause[m], "ause_published")} for m in result.ece}
    figure3 = {s: {"AuROC": _percent(_value(result.meta_classification[s], "value")),
                   "R2": _percent(_value(result.meta_regression[s], "value"))} for s in result.meta_classification}
    tables = [
        Table("Pixel-wise uncertainty (Table 1)", TABLE1_COLUMNS, table1, digits=4,
              note="ECE: 10 bins, confidence 1 - s for 1 - max softmax maps, else 1 - min-max normalised "
                   "score; AuSE: Brier error, 100 steps; AuSE_published: the published code's variant "
                   "(mean uncertainty of the kept pixels), comparable with the paper."),
        Table("Published: Table 1 (Cityscapes val; AuSE as published)", published.TABLE1_COLUMNS,
              {k: dict(zip(published.TABLE1_COLUMNS, v)) for k, v in published.TABLE1.items()}, digits=4),
        Table("Segment-wise prediction quality (Figure 3), percent", FIGURE3_COLUMNS, figure3,
              note=f"Meta classification (IoU = 0 vs > 0, logistic regression, AuROC) and meta regression "
                   f"(IoU, linear regression, R^2) on {result.segments} segments of {result.frames} images; "
                   f"{folds}-fold cross validation grouped by image, seed {seed}."),
    ]
    undefined = [f"{name}: {metric} undefined ({value.reason})"
                 for name in result.ece for metric, value in (("ECE", result.ece[name]), ("AuSE", result.ause[name]))
                 if isinstance(value, Undefined)]
    undefined += [f"{method_label(name)}: {task} undefined ({value.reason})"
                  for name in result.meta_classification
                  for task, value in (("meta classification", result.meta_classification[name]),
                                      ("meta regression", result.meta_regression[name]))
                  if isinstance(value, Undefined)]

    def draw(folder: Path) -> dict[str, Path]:
        return {"sparsification": _sparsification_plot(result, methods, folder / "sparsification.png"),
                "figure3": _figure3_plot(figure3, folder / "figure3.png")}

    return EvalReport(header, methods, timing, tables, result.to_json(), ["sparsification", "figure3"],
                      draw, [*notes, *undefined])


def _sparsification_plot(result: InDistResult, methods: Mapping[str, MethodInfo], path: Path) -> Path:
    fig, axes = figure("Sparsification (Brier error)", "fraction of pixels removed", "normalised mean error")
    defined = {name: ause for name, ause in result.ause.items() if not isinstance(ause, Undefined)}
    for name, ause in defined.items():
        axes.plot(ause.fractions, ause.curve, label=f"{methods[name].label} (AuSE {ause.ause:.4f})")
    if defined:
        oracle = next(iter(defined.values()))
        axes.plot(oracle.fractions, oracle.oracle, "k--", label="oracle")
    axes.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _figure3_plot(rows: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    fig, axes = figure("Segment-wise prediction quality (Figure 3)", "", "percent")
    labels = [method_label(name) for name in rows]
    x = np.arange(len(labels))
    axes.bar(x - 0.2, [rows[n]["AuROC"] or 0.0 for n in rows], 0.4, label="meta classification AuROC")
    axes.bar(x + 0.2, [rows[n]["R2"] or 0.0 for n in rows], 0.4, label="meta regression R^2")
    axes.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
    axes.set_ylim(max(axes.get_ylim()[0], -50.0), 100.0)  # a badly negative R^2 runs off the chart
    axes.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
