"""PR and ROC curve plots of pixel-level OoD results (matplotlib, drawn off-screen with Agg)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pgn_deploy.contract import atomic_write, require
from pgn_deploy.eval.metrics.pixel import PixelResult

PLOT_FILES = {"pr": "pr_curve.png", "roc": "roc_curve.png"}


def plot_paths(folder: str | Path) -> dict[str, Path]:
    """The files :func:`plot_pixel_curves` writes into ``folder``."""
    return {kind: Path(folder) / name for kind, name in PLOT_FILES.items()}


def _figure(title: str, xlabel: str, ylabel: str):  # -> (Figure, Axes)
    require("matplotlib", "plotting curves")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 6.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.01))
    axes.grid(True, alpha=0.3)
    return figure, axes


def _finish(figure, axes, path: Path, force: bool) -> None:  # noqa: ANN001 (matplotlib objects)
    """Legend below the axes (it never hides a curve), then write the PNG atomically."""
    handles, labels = axes.get_legend_handles_labels()
    columns = 1 if len(labels) <= 4 else 2
    rows = -(-len(labels) // columns)
    figure.legend(handles, labels, loc="lower center", fontsize="small", ncol=columns, frameon=False)
    figure.tight_layout(rect=(0, 0.032 * rows + 0.02, 1, 1))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), force=force)


def plot_pixel_curves(results: Mapping[str, PixelResult], folder: str | Path, force: bool = False,
                      subject: str = "") -> dict[str, Path]:
    """Write ``pr_curve.png`` and ``roc_curve.png`` with one line per method into ``folder``.

    ``subject`` (the data set and track, e.g. ``"road_anomaly21, anomaly track"``) goes into both
    titles. PR: precision over recall, AuPRC in the legend, the chance line at the OoD pixel
    fraction. ROC: TPR over a logarithmic FPR axis (FPR95 lives at small FPRs), AuROC and FPR95
    in the legend, the 95 % TPR line and the chance diagonal. Legends sit below the axes.
    """
    paths = plot_paths(folder)
    suffix = f"\n{subject}" if subject else ""
    pr, pr_axes = _figure(f"Precision-recall, pixels{suffix}", "recall", "precision")
    roc, roc_axes = _figure(f"ROC, pixels{suffix}", "false positive rate (log scale)", "true positive rate")
    pr_axes.set_xlim(0, 1)
    smallest = 1.0
    for name, result in results.items():
        curve = result.curve
        pr_axes.step(curve["recall"], curve["precision"], where="pre",
                     label=f"{name} (AuPRC {100 * result.auprc:.1f})")
        fpr = np.asarray(curve["fpr"], np.float64)
        shown = fpr > 0
        roc_axes.plot(fpr[shown], np.asarray(curve["tpr"])[shown], label=f"{name} (AuROC {100 * result.auroc:.1f}, "
                                                                          f"FPR95 {100 * result.fpr95:.1f})")
        if shown.any():
            smallest = min(smallest, float(fpr[shown].min()))
        if result.negatives:
            smallest = min(smallest, 1.0 / result.negatives)
    first = next(iter(results.values()), None)
    if first is not None and first.positives + first.negatives:
        chance = first.positives / (first.positives + first.negatives)
        pr_axes.axhline(chance, color="black", linewidth=0.9, linestyle="--",
                        label=f"chance ({100 * chance:.2f} % OoD)")
    lower = 10.0 ** np.floor(np.log10(max(smallest, 1e-9)))
    roc_axes.set_xscale("log")
    roc_axes.set_xlim(lower, 1.0)
    grid = np.logspace(np.log10(lower), 0.0, 200)
    roc_axes.plot(grid, grid, color="black", linewidth=0.9, linestyle="--", label="chance")
    roc_axes.axhline(0.95, color="grey", linewidth=0.9, linestyle=":", label="TPR 95 % (FPR95 read here)")
    _finish(pr, pr_axes, paths["pr"], force)
    _finish(roc, roc_axes, paths["roc"], force)
    return paths
