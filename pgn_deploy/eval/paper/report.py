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

from pgn_deploy.contract import ArtifactExistsError, format_p, parse_map_name, require

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
        return method_label(self.name)


def method_label(name: str) -> str:
    """Display name of a map or feature set: ``pgn_uni_p0.5`` -> ``PGN_uni p=0.5``."""
    fixed = {"msp": "Maximum Softmax", "entropy": "Entropy",
             "mc_entropy": "MC Dropout (entropy)", "mc_variance": "MC Dropout (variance)",
             "ens_entropy": "Ensemble (entropy)", "ens_msp": "Ensemble (max softmax)",
             "metaseg": "MetaSeg", "pgn_oh": "PGN_oh", "pgn_uni": "PGN_uni", "pgn": "PGN",
             "metaseg+pgn": "MetaSeg + PGN", "pgn_last": "PGN (last layer)",
             "pgn_penultimate": "PGN (penultimate layer)"}
    if name in fixed:
        return fixed[name]
    if "@" in name:  # a map of another file of the model (pgn-eval --variant TAG=MODEL)
        base, tag = name.rsplit("@", 1)
        return f"{method_label(base)} [{tag}]"
    parsed = parse_map_name(name)
    if parsed is not None:
        label, p, layer = parsed
        return f"PGN_{label} p={format_p(p)}" + (" (penultimate)" if layer == "penultimate" else "")
    return name


@dataclasses.dataclass
class Table:
    """A table of the report: ``rows[key][column]`` (``None``: undefined); keys are map or
    feature-set names, shown with :func:`method_label`."""

    title: str
    columns: Sequence[str]
    rows: dict[str, dict[str, float | None]]
    digits: int = 2
    note: str = ""

    def markdown(self) -> list[str]:
        """The table as Markdown lines: a heading, one row per key (``n/a`` where undefined), the note."""
        lines = [f"### {self.title}", "", "| method | " + " | ".join(self.columns) + " |",
                 "|---|" + "---:|" * len(self.columns)]
        for key, row in self.rows.items():
            cells = ["n/a" if row.get(c) is None else f"{row[c]:.{self.digits}f}" for c in self.columns]
            lines.append(f"| {method_label(key)} | " + " | ".join(cells) + " |")
        return [*lines, *(["", self.note] if self.note else []), ""]

    def to_json(self) -> dict[str, Any]:
        """Rows as a list (their order is the table's), each ``{"map": key, column: value}``."""
        return {"title": self.title, "columns": list(self.columns),
                "rows": [{"map": key, **row} for key, row in self.rows.items()], "note": self.note}


PlotJob = Callable[[Path], dict[str, Path]]
"""Draws plots into a folder: ``job(folder) -> {plot name: written file}``."""


@dataclasses.dataclass
class EvalReport:
    """Everything one evaluation found; :func:`write_report` renders it.

    ``header``: command, model, backend, dataset, frames, TTA, binning, wall time;
    ``methods``: the evaluated maps; ``timing``: per method, compute seconds per frame
    computed in this run (cached frames cost nothing); ``tables``: the paper's tables;
    ``details``: every metric as a fraction, per map; ``plots``: the plot names and the job
    drawing them; ``notes``: lines for the Markdown (how things were computed, how to
    recompute them).
    """

    header: dict[str, Any]
    methods: dict[str, MethodInfo]
    timing: dict[str, dict[str, float | int]]
    tables: list[Table]
    details: dict[str, Any]
    plot_names: list[str] = dataclasses.field(default_factory=list)
    plot_job: PlotJob | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def kind(self) -> str:
        """The dataset kind of the header (``cityscapes`` or an OoD kind), used in file names."""
        return self.header["dataset"]["kind"]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (NaN and infinities as ``None``; plots by file name)."""
        return finite({
            "header": self.header,
            "methods": {name: {"label": i.label, "method": i.method, "cost": i.cost}
                        for name, i in self.methods.items()},
            "timing": self.timing,
            "tables": [table.to_json() for table in self.tables],
            "details": self.details,
            "plots": {name: PLOT.format(kind=self.kind, plot=name) for name in self.plot_names},
            "notes": self.notes,
        })

    def to_text(self) -> str:
        """The report as Markdown: command, model, dataset, tables, timing, plots and notes."""
        head, dataset = self.header, self.header["dataset"]
        lines = [f"# pgn-eval: {dataset['kind']}", "", "```sh", head["command"], "```", "",
                 f"* model: `{head['model']['path']}` (sha256 {head['model']['sha256'][:16]}..., "
                 f"backend {head['model']['backend']})",
                 f"* dataset: `{dataset['root']}`: {dataset['frames']} labelled frames"
                 + (f", {dataset['unlabeled']} without label skipped" if dataset["unlabeled"] else ""),
                 f"* test-time augmentation: {head['tta']}", f"* wall time: {head['seconds']:.1f} s", ""]
        for table in self.tables:
            lines += table.markdown()
        lines += ["### Cost of each method", "", "| method | cost at inference | computed here, s/frame |",
                  "|---|---|---:|"]
        for info in self.methods.values():
            timing = self.timing.get(info.method, {})
            per_frame = f"{timing['mean_s']:.3f}" if timing.get("frames") else "cached"
            lines.append(f"| {info.label} | {info.cost} | {per_frame} |")
        lines.append("")
        lines += [f"![{name}]({PLOT.format(kind=self.kind, plot=name)})\n" for name in self.plot_names]
        lines += [f"* {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become ``None``, numpy scalars Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    """An off-screen matplotlib figure (no pyplot) and its axes."""
    require("matplotlib", "drawing the report's plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    return fig, axes


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    """Where a report of dataset ``kind`` goes in folder ``out``."""

    out: Path
    kind: str

    @property
    def markdown(self) -> Path:
        """``out`` / the Markdown report's file name for ``kind``."""
        return self.out / REPORT_MD.format(kind=self.kind)

    @property
    def json(self) -> Path:
        """``out`` / the JSON report's file name for ``kind``."""
        return self.out / REPORT_JSON.format(kind=self.kind)

    def plot(self, name: str) -> Path:
        """``out`` / the file name of plot ``name`` for ``kind``."""
        return self.out / PLOT.format(kind=self.kind, plot=name)

    def check(self, force: bool) -> None:
        """Refuse (before any work) to replace an existing report without ``force``."""
        for path in (self.markdown, self.json):
            if path.exists() and not force:
                raise ArtifactExistsError(f"{path} exists; pass --force to replace it")


def write_report(report: EvalReport, out: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Render the plots, the JSON and the Markdown into a staging folder inside ``out``, then
    rename them into place. Returns the written files."""
    paths = ReportPaths(Path(out), report.kind)
    paths.check(force)
    paths.out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pgn-eval-report-", dir=paths.out))
    try:
        staged: dict[Path, Path] = {}
        if report.plot_job is not None:
            drawn = report.plot_job(staging)
            staged |= {paths.plot(name): drawn[name] for name in report.plot_names}
        (staging / "report.json").write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
        staged[paths.json] = staging / "report.json"
        (staging / "report.md").write_text(report.to_text())
        staged[paths.markdown] = staging / "report.md"
        for target, source in staged.items():
            os.replace(source, target)
        return list(staged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
