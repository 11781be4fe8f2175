"""(a) grafted/plain latency ratio per variant, (f) latency against pixel count.

Per model and size, the plain model and the grafted variants run interleaved in one process,
in two groups: the feature-resolution variants (cheap: the headline targets) and the
``resolution output`` ones (costly: in the same rounds they would crowd out the others); each
variant's ratio to the plain model of its group is the ratio of medians with a paired
bootstrap 95 % interval. The headline's group also times a second session of the plain model (:data:`CONTROL`),
whose ratio shows how far apart two sessions of one model measure, and is repeated with fresh
sessions (:data:`HEADLINE_REPEATS`). The log-log slope of
median latency against pixel count is fitted per model and variant over the sizes measured.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Settings, interleave, log, ort_call, pool, summarize
from benchmarks.models import ModelFiles

HEADLINE = ("deeplabv3_mobilenet_v3_large", (512, 1024))
CONTROL = "plain_again"
"""A second session of the plain model, timed with the headline's feature-resolution group: an
A/A control whose ratio to the plain model is what two sessions of one model differ by in
this harness (memory placement, caches), the floor under any end-to-end ratio."""
HEADLINE_BUDGET_FACTOR = 8.0
HEADLINE_REPEATS = 3
"""The headline's feature-resolution group is timed as this many independent comparisons,
each with fresh sessions of every variant created in another order (:func:`_rotated`),
sharing the headline's budget: two sessions of one model differ by about 1 % (memory
placement), and the one created first by up to 2.5 %, a bias that rounds within one
comparison cannot average out. The ratios pool all rounds; each comparison's own ratios are
kept beside them."""
OUTPUT_RESOLUTION_MAX_PIXELS = 512 * 1024
SLOW_MODEL = "deeplabv3_resnet50"


def plan_variants(model: str, size: tuple[int, int], wanted: list[str]) -> tuple[list[str], list[str]]:
    """The variants of ``wanted`` to time at ``size`` and the reasons for those left out."""
    pixels = size[0] * size[1]
    variants, skipped = [], []
    for name in wanted:
        if name.endswith("_output") and pixels > OUTPUT_RESOLUTION_MAX_PIXELS:
            skipped.append(f"{name}: the classifier input resized to the output size is an E x H x W float "
                           f"tensor (2 GiB for 256 channels at 1024x2048)")
        elif model == SLOW_MODEL and pixels > 256 * 512 and name not in ("one", "ten", "ten_keep"):
            skipped.append(f"{name}: {SLOW_MODEL} takes seconds per call at this size on 2 cores")
        else:
            variants.append(name)
    return variants, skipped


def skip_size(model: str, size: tuple[int, int]) -> str | None:
    """Why ``model`` is not timed at ``size`` at all, or ``None``."""
    if model == SLOW_MODEL and size[0] * size[1] > 512 * 1024:
        return f"{SLOW_MODEL} at {size[0]}x{size[1]}: about 20 s per call on 2 CPU cores, too slow for this study"
    return None


def run(models: list[str], sizes: list[tuple[int, int]], wanted: list[str], settings: Settings,
        work: Path) -> dict[str, Any]:
    """Time every model, size and variant; returns ``{"records": [...], "skipped": [...],
    "scaling": [...]}``."""
    records, skipped = [], []
    for model in models:
        files = ModelFiles(model, work)
        for size in sizes:
            reason = skip_size(model, size)
            if reason:
                skipped.append(reason)
                continue
            variants, left_out = plan_variants(model, size, wanted)
            skipped += [f"{model} {size[0]}x{size[1]} {why}" for why in left_out]
            budget = settings.budget_s * (HEADLINE_BUDGET_FACTOR if (model, size) == HEADLINE else 1.0)
            groups = [[v for v in variants if not v.endswith("_output")],
                      [v for v in variants if v.endswith("_output")]]
            summaries = {}
            for group, members in zip(("feature", "output"), groups):
                if members:
                    headline = group == "feature" and (model, size) == HEADLINE
                    repeats = HEADLINE_REPEATS if headline else 1
                    runs = []
                    for repeat in range(repeats):
                        log(f"overhead: {model} {size[0]}x{size[1]}: plain + {', '.join(members)}"
                            + (f" (comparison {repeat + 1} of {repeats})" if repeats > 1 else ""))
                        names = ["plain", *members, *([CONTROL] if headline else [])]
                        made = {name: ort_call(files.file("plain" if name == CONTROL else name), settings, size)
                                for name in _rotated(names, repeat, repeats)}
                        calls = {name: made[name] for name in names}
                        del made
                        runs.append(interleave(calls, settings, budget / repeats))
                        del calls
                    summaries[group] = summarize(pool(runs))
                    if repeats > 1:
                        summaries[group]["repeats"] = [summarize(run)["ratio_to_plain"] for run in runs]
            records.append({"model": model, "size": list(size), "pixels": size[0] * size[1], **_merge(summaries)})
    return {"records": records, "skipped": skipped, "scaling": scaling(records)}


def _rotated(names: list[str], repeat: int, repeats: int) -> list[str]:
    """The order to create the sessions of comparison ``repeat`` of ``repeats`` in: rotated by
    an equal share each time. The session created first in a process measured 1-2.5 % slower
    than a later session of the same model (A/A control, 1 thread), so each comparison hands
    that place to another variant."""
    shift = repeat * len(names) // repeats
    return names[shift:] + names[:shift]


def _merge(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One record from the groups' summaries: the plain model's latency from the first group,
    every variant's latency and ratio to the plain model of its own group, rounds per group."""
    merged: dict[str, Any] = {"rounds": {}, "load_before": None, "load_after": None,
                              "latency_ms": {}, "ratio_to_plain": {}}
    for group, summary in summaries.items():
        merged["rounds"][group] = summary["rounds"]
        merged["load_before"] = merged["load_before"] or summary["load_before"]
        merged["load_after"] = summary["load_after"]
        merged["ratio_to_plain"].update(summary["ratio_to_plain"])
        if "repeats" in summary:
            merged["repeats"] = summary["repeats"]
        latency = summary["latency_ms"]
        merged["latency_ms"].update({k: v for k, v in latency.items()
                                     if k != "plain" or "plain" not in merged["latency_ms"]})
    return merged


def scaling(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least-squares slope of log(median latency) against log(pixels), per model and variant
    measured at two sizes or more (1: linear in the pixel count)."""
    fits = []
    for model in dict.fromkeys(r["model"] for r in records):
        rows = [r for r in records if r["model"] == model]
        for variant in dict.fromkeys(v for r in rows for v in r["latency_ms"]):
            points = [(r["pixels"], r["latency_ms"][variant]["median_ms"]) for r in rows if variant in r["latency_ms"]]
            if len(points) < 2:
                continue
            x, y = np.log([p for p, _ in points]), np.log([m for _, m in points])
            slope, _ = np.polyfit(x, y, 1)
            fits.append({"model": model, "variant": variant, "slope": float(slope),
                         "pixels": [p for p, _ in points], "median_ms": [m for _, m in points]})
    return fits
