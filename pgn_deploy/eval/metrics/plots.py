"""PR and ROC curve plots of pixel-level OoD results (matplotlib, drawn off-screen with Agg)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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

    figure = Figure(figsize=(6, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01))
    axes.grid(True, alpha=0.3)
    return figure, axes


def plot_pixel_curves(results: Mapping[str, PixelResult], folder: str | Path, force: bool = False) -> dict[str, Path]:
    """Write ``pr_curve.png`` (precision over recall, AuPRC in the legend) and ``roc_curve.png``
    (TPR over FPR, AuROC and FPR95) with one line per method into ``folder``."""
    paths = plot_paths(folder)
    pr, pr_axes = _figure("Precision-recall (pixels)", "recall", "precision")
    roc, roc_axes = _figure("ROC (pixels)", "false positive rate", "true positive rate")
    for name, result in results.items():
        curve = result.curve
        pr_axes.step(curve["recall"], curve["precision"], where="pre",
                     label=f"{name} (AuPRC {100 * result.auprc:.1f})")
        roc_axes.plot(curve["fpr"], curve["tpr"], label=f"{name} (AuROC {100 * result.auroc:.1f}, "
                                                        f"FPR95 {100 * result.fpr95:.1f})")
    roc_axes.axhline(0.95, color="grey", linewidth=0.8, linestyle=":")
    for figure, axes, kind in ((pr, pr_axes, "pr"), (roc, roc_axes, "roc")):
        axes.legend(loc="lower left" if kind == "pr" else "lower right", fontsize="small")
        figure.tight_layout()
        atomic_write(paths[kind], lambda tmp, f=figure: f.savefig(tmp, format="png"), force=force)
    return paths
