"""The report of one ``pgn-eval`` run: tables, plots and the exact command, as Markdown and JSON.

Files in ``--out`` (``<kind>`` is the dataset kind, e.g. ``road_anomaly21``):
``<kind>.report.md``, ``<kind>.report.json`` and the plots ``<kind>.<plot>.png``. They are
rendered into a hidden staging folder inside ``--out`` and renamed into place at the very end,
so a failed run leaves none of them (and an existing report is replaced only with ``force``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.contract import ArtifactExistsError, require
from pgn_deploy.eval import paper_reference as P
from pgn_deploy.eval.ood_eval import TABLE_COLUMNS, table_row

REPORT_MD = "{kind}.report.md"
REPORT_JSON = "{kind}.report.json"
PLOT = "{kind}.{plot}.png"


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """An evaluated map: its ``name``, the ``method`` that computes it (``model``,
    ``mc_dropout``, ``ensemble``) and the ``cost`` of that at inference, in words."""

    name: str
    method: str
    cost: str

    @property
    def label(self) -> str:
        """Name in the tables: ``PGN_uni p=0.5``, ``Maximum Softmax``, ``MC Dropout (entropy)``."""
        fixed = {"msp": "Maximum Softmax", "entropy": "Entropy",
                 "mc_entropy": "MC Dropout (entropy)", "mc_variance": "MC Dropout (variance)",
                 "ens_entropy": "Ensemble (entropy)", "ens_msp": "Ensemble (max softmax)"}
        if self.name in fixed:
            return fixed[self.name]
        if self.name.startswith("pgn_"):
            label, _, p = self.name[4:].partition("_p")
            return f"PGN_{label} p={p}"
        return self.name


@dataclasses.dataclass
class Table:
    """A table of the report: ``rows[map name][column]`` (``None``: undefined)."""

    title: str
    columns: Sequence[str]
    rows: dict[str, dict[str, float | None]]
    digits: int = 2
    note: str = ""

    def markdown(self, infos: Mapping[str, MethodInfo]) -> list[str]:
        lines = [f"### {self.title}", "", "| method | " + " | ".join(self.columns) + " |",
                 "|---|" + "---:|" * len(self.columns)]
        for name, row in self.rows.items():
            label = infos[name].label if name in infos else name
            cells = ["n/a" if row.get(c) is None else f"{row[c]:.{self.digits}f}" for c in self.columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return [*lines, *([f"", self.note] if self.note else []), ""]

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": self.rows, "note": self.note}


Plot = Callable[[Any], None]
"""Draws one figure: ``plot(figure)`` (a matplotlib Figure)."""


@dataclasses.dataclass
class EvalReport:
    """Everything one evaluation found; :func:`write_report` renders it.

    ``header``: command, model, backend, dataset, frames, TTA, binning, wall time;
    ``methods``: the evaluated maps; ``timing``: per method, compute seconds per frame
    computed in this run (cached frames cost nothing); ``tables``: the paper's tables;
    ``details``: every metric as a fraction, per map; ``plots``: plot name -> drawing function;
    ``notes``: lines for the Markdown (how things were computed, how to recompute them).
    """

    kind: str
    header: dict[str, Any]
    methods: dict[str, MethodInfo]
    timing: dict[str, dict[str, float | int]]
    tables: list[Table]
    details: dict[str, Any]
    plots: dict[str, Plot] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return _finite({
            "header": self.header,
            "methods": {name: {"label": i.label, "method": i.method, "cost": i.cost} for name, i in self.methods.items()},
            "timing": self.timing,
            "tables": [table.to_json() for table in self.tables],
            "details": self.details,
            "plots": {name: PLOT.format(kind=self.header["dataset"]["kind"], plot=name) for name in self.plots},
            "notes": self.notes,
        })

    def markdown(self) -> str:
        head = self.header
        dataset = head["dataset"]
        lines = [f"# pgn-eval: {dataset['kind']}", "", "```sh", head["command"], "```", "",
                 f"* model: `{head['model']['path']}` (sha256 {head['model']['sha256'][:16]}..., "
                 f"backend {head['model']['backend']})",
                 f"* dataset: `{dataset['root']}`: {dataset['frames']} labelled frames"
                 + (f", {dataset['unlabeled']} without label skipped" if dataset["unlabeled"] else ""),
                 f"* test-time augmentation: {head['tta']}", f"* wall time: {head['seconds']:.1f} s", ""]
        for table in self.tables:
            lines += table.markdown(self.methods)
        lines += ["### Cost of each method", "", "| method | cost at inference | computed here, s/frame |",
                  "|---|---|---:|"]
        for name, info in self.methods.items():
            timing = self.timing.get(info.method, {})
            per_frame = f"{timing['mean_s']:.3f}" if timing.get("frames") else "cached"
            lines.append(f"| {info.label} | {info.cost} | {per_frame} |")
        lines.append("")
        kind = dataset["kind"]
        for name in self.plots:
            lines += [f"![{name}]({PLOT.format(kind=kind, plot=name)})", ""]
        lines += [f"* {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    @classmethod
    def for_ood(cls, header: dict[str, Any], methods: dict[str, MethodInfo], results: Mapping[str, Any],
                timing: dict[str, dict[str, float | int]], extra: Mapping[str, Any], notes: list[str]) -> EvalReport:
        """The report of an OoD split: Tables 2/3 rows, PR and ROC plots."""
        kind = header["dataset"]["kind"]
        rows = {name: table_row(result) for name, result in results.items()}
        first = next(iter(results.values()))
        tables = [Table(f"OoD segmentation ({kind}, {first.components.track.name} track), percent",
                        TABLE_COLUMNS, rows,
                        note=f"Pixel counting: {first.pixel.method}. Components at each map's best-F1 "
                             f"threshold; min_pred {first.components.track.min_pred} px, min_gt "
                             f"{first.components.track.min_gt} px.")]
        if kind in P.OOD_TABLES:
            tables.append(Table(f"Published: {P.OOD_SOURCES[kind]}, percent", P.OOD_COLUMNS,
                                {k: dict(zip(P.OOD_COLUMNS, v)) for k, v in P.OOD_TABLES[kind].items()},
                                digits=1, note="The paper's numbers (WideResNet38 DeepLabV3+ trained on "
                                               "Cityscapes, official benchmark), for comparison only."))
        details = {"maps": {name: result.to_json() for name, result in results.items()}, **extra}
        plots = {"pr": lambda fig: _curves(fig, results, methods, "recall", "precision", "Precision-recall"),
                 "roc": lambda fig: _curves(fig, results, methods, "fpr", "tpr", "ROC")}
        return cls(kind, header, methods, timing, tables, details, plots, notes)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _curves(figure: Any, results: Mapping[str, Any], methods: Mapping[str, MethodInfo],
            x: str, y: str, title: str) -> None:
    axes = figure.add_subplot(1, 1, 1)
    for name, result in results.items():
        curve = result.pixel.curve
        axes.plot(curve[x], curve[y], label=f"{methods[name].label}", linewidth=1.2)
    axes.set_xlabel({"recall": "recall", "fpr": "false positive rate"}[x])
    axes.set_ylabel({"precision": "precision", "tpr": "true positive rate"}[y])
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    """Where a report of dataset ``kind`` goes in folder ``out``."""

    out: Path
    kind: str

    @property
    def markdown(self) -> Path:
        return self.out / REPORT_MD.format(kind=self.kind)

    @property
    def json(self) -> Path:
        return self.out / REPORT_JSON.format(kind=self.kind)

    def plot(self, name: str) -> Path:
        return self.out / PLOT.format(kind=self.kind, plot=name)

    def check(self, force: bool) -> None:
        """Refuse (before any work) to replace an existing report without ``force``."""
        for path in (self.markdown, self.json):
            if path.exists() and not force:
                raise ArtifactExistsError(f"{path} exists; pass --force to replace it")


def report_paths(out: Path, kind: str) -> ReportPaths:
    return ReportPaths(Path(out), kind)


def write_report(report: EvalReport, paths: ReportPaths, force: bool = False) -> list[Path]:
    """Render the plots, the JSON and the Markdown into a staging folder inside ``paths.out``,
    then rename them into place. Returns the written files."""
    paths.check(force)
    paths.out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pgn-eval-report-", dir=paths.out))
    try:
        staged: dict[Path, Path] = {}
        for name, draw in report.plots.items():
            staged[paths.plot(name)] = _render(draw, staging / f"{name}.png")
        (staging / "report.json").write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
        staged[paths.json] = staging / "report.json"
        (staging / "report.md").write_text(report.markdown())
        staged[paths.markdown] = staging / "report.md"
        for target, source in staged.items():
            os.replace(source, target)
        return list(staged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _render(draw: Plot, path: Path) -> Path:
    require("matplotlib", "eval", "drawing the report's plots")
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(6, 4.5), dpi=120)
    draw(figure)
    figure.tight_layout()
    figure.savefig(path)
    return path
