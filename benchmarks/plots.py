"""PNG plots of the study (matplotlib, Agg backend); each takes the results document and a path."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- after choosing the backend

from benchmarks.report import VARIANT_TEXT  # noqa: E402
from benchmarks.targets import OVERHEAD_TARGETS  # noqa: E402


def _footer(fig: Any, doc: dict[str, Any]) -> None:
    m = doc["machine"]
    fig.text(0.01, 0.01, f"{m['date_utc']} - {m['cpu']}, {m['usable_cores']} cores - {doc['settings']['backend']}, "
             f"{doc['settings']['threads']} threads - load {m['load_average'][0] if m['load_average'] else '?'}",
             fontsize=7, color="gray")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


OVERHEAD_TICKS = (-20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _variant_colors() -> dict[str, str]:
    """One fixed colour per variant, the same in every panel and in the legend."""
    return {variant: f"C{k}" for k, variant in enumerate(VARIANT_TEXT)}


def overhead(doc: dict[str, Any], path: Path) -> None:
    """Overhead in percent (with the 95 % interval) per variant, one panel per size.

    One legend for the figure, holding exactly the variants drawn, in their panel colours; a
    symlog axis (linear within +-2 %) with ticks at the 1/2/5 % targets, which are labelled lines.
    """
    from matplotlib.patches import Patch

    records = doc["overhead"]["records"]
    sizes = list(dict.fromkeys(tuple(r["size"]) for r in records))
    colors = _variant_colors()
    drawn: list[str] = []
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(9.0, 5.8 * len(sizes)), 5.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rows = [r for r in records if tuple(r["size"]) == size]
        variants = [v for v in VARIANT_TEXT if any(r["ratio_to_plain"].get(v) for r in rows)]
        ends: list[float] = [0.0]
        width = 0.8 / max(1, len(variants))
        for k, variant in enumerate(variants):
            xs, ys, err = [], [], [[], []]
            for i, r in enumerate(rows):
                ratio = r["ratio_to_plain"].get(variant)
                if ratio:
                    xs.append(i + (k - len(variants) / 2 + 0.5) * width)
                    ys.append(100 * (ratio["value"] - 1))
                    err[0].append(100 * (ratio["value"] - ratio["low"]))
                    err[1].append(100 * (ratio["high"] - ratio["value"]))
            ax.bar(xs, ys, width, yerr=err, capsize=2, color=colors[variant])
            ends += [y - e for y, e in zip(ys, err[0])] + [y + e for y, e in zip(ys, err[1])]
            if variant not in drawn:
                drawn.append(variant)
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=20, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_yscale("symlog", linthresh=2, linscale=1.0)
        low, high = min(-2.5, 1.3 * min(ends)), max(6.0, 1.6 * max(ends))
        ticks = [t for t in OVERHEAD_TICKS if low <= t <= high]
        ticks = [t for t in ticks if abs(t) <= 5 or t in (-10, 10, 50, 100, 500, 1000) or abs(t) >= high / 1.6]
        ax.set_yticks(ticks, [f"{t:+g} %" if t else "0" for t in ticks], fontsize=7)
        ax.set_ylim(low, high)
        for _, limit, _ in OVERHEAD_TARGETS:
            level = 100 * (limit - 1)
            ax.axhline(level, color="gray", linestyle=":", linewidth=0.9)
            ax.annotate(f"{level:g} % target", (1.005, level), xycoords=("axes fraction", "data"), fontsize=6,
                        color="dimgray", va="center")
        ax.set_title(f"{size[0]}x{size[1]}")
        ax.set_ylabel("latency over plain model (%)")
    fig.legend([Patch(color=colors[v]) for v in drawn], [VARIANT_TEXT[v] for v in drawn], loc="lower center",
               bbox_to_anchor=(0.5, 0.035), ncol=min(4 if len(sizes) > 1 else 3, len(drawn)), fontsize=8,
               frameon=False)
    fig.suptitle("Grafted / plain latency, 95 % intervals (dotted: the 1, 2 and 5 % targets)")
    fig.tight_layout(rect=(0, 0.15, 0.97, 0.95))
    _footer(fig, doc)
    _save(fig, path)


def scaling(doc: dict[str, Any], path: Path) -> None:
    """Median latency against pixel count (log-log), plain and 10 maps per model."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for fit in doc["overhead"]["scaling"]:
        if fit["variant"] not in ("plain", "ten"):
            continue
        style = "-" if fit["variant"] == "plain" else "--"
        ax.plot(fit["pixels"], fit["median_ms"], style, marker="o",
                label=f"{fit['model']} {fit['variant']} (slope {fit['slope']:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixels per image")
    ax.set_ylabel("median latency (ms)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Latency against pixel count")
    _footer(fig, doc)
    _save(fig, path)


METHOD_COLORS = {"ONNX": "tab:blue", "PyTorch eager": "tab:orange", "MC dropout": "tab:red"}


def _method_kind(name: str) -> str:
    """The legend group of a method name of the study."""
    return "PyTorch eager" if name.startswith("torch") else "MC dropout" if name.startswith("mc") else "ONNX"


def methods(doc: dict[str, Any], path: Path) -> None:
    """Median latency of every method (log scale), one group per model."""
    records = doc["methods"]
    fig, axes = plt.subplots(1, len(records), figsize=(6 * len(records), 4.8), squeeze=False)
    for ax, r in zip(axes[0], records):
        names = list(r["latency_ms"])
        ax.bar(range(len(names)), [r["latency_ms"][n]["median_ms"] for n in names],
               color=[METHOD_COLORS[_method_kind(n)] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{r['model']} {r['size'][0]}x{r['size'][1]}", fontsize=9)
    from matplotlib.patches import Patch

    kinds = list(dict.fromkeys(_method_kind(n) for r in records for n in r["latency_ms"]))
    fig.legend([Patch(color=METHOD_COLORS[k]) for k in kinds], kinds, loc="upper right", fontsize=8)
    fig.suptitle("Median latency per method")
    fig.tight_layout(rect=(0, 0.04, 0.9, 1))
    _footer(fig, doc)
    _save(fig, path)


def memory(doc: dict[str, Any], path: Path) -> None:
    """Peak RSS increase of every method (fresh process each)."""
    records = doc["memory"]
    models = list(dict.fromkeys(r["model"] for r in records))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in records if r["model"] == model]
        ax.bar(range(len(rows)), [r["increase_mb"] for r in rows])
        ax.set_xticks(range(len(rows)), [r["method"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("peak RSS over the loaded libraries (MiB)")
        ax.set_title(model, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(fig, doc)
    _save(fig, path)


PLOTS: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any], Path], None]]] = {
    "overhead": (lambda doc: bool(doc.get("overhead", {}).get("records")), overhead),
    "scaling": (lambda doc: bool(doc.get("overhead", {}).get("scaling")), scaling),
    "methods": (lambda doc: bool(doc.get("methods")), methods),
    "memory": (lambda doc: bool(doc.get("memory")), memory),
}
"""name -> (whether the results have data for it, draw(doc, path))."""
