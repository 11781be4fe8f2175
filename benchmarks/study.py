"""Run the sections of the latency study and collect their results in one document."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from benchmarks import backprop, fp16, memory, methods, overhead, profile_ops
from benchmarks.common import Settings, log
from benchmarks.mc_dropout import mc_file
from benchmarks.models import VARIANTS, ModelFiles
from benchmarks.targets import evaluate
from pgn_deploy.benchmark import machine_info

SECTIONS = ("overhead", "methods", "backprop", "memory", "fp16", "profile")
MC_MODELS = ("demo", "deeplabv3_mobilenet_v3_large")
MEMORY_MODEL = "deeplabv3_mobilenet_v3_large"
BACKPROP_PIXELS = 64
PROFILED = ("one", "ten", "ten_keep", "one_output", "ten_penultimate", "twenty")
"""Variants profiled per node (those of them the plan times): the headline targets' three, the
graft of the exact per-output-pixel map that (d) compares with back-propagation at the output
resolution, and the penultimate layer's ten maps and all twenty."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to measure: models, sizes and grafted variants of the overhead sweep, the size of the
    per-method comparisons (``focus``), the crops for per-pixel back-propagation, the sections."""

    models: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    focus: tuple[int, int]
    crops: tuple[tuple[int, int], ...]
    sections: tuple[str, ...] = SECTIONS
    variants: tuple[str, ...] = tuple(VARIANTS)


def _memory(plan: Plan, settings: Settings, work: Path) -> list[dict[str, Any]]:
    size = plan.focus
    common = {"threads": settings.threads}
    records = []
    for model in [m for m in plan.models if m == MEMORY_MODEL]:
        files = ModelFiles(model, work)
        probes = {f"ort_{v}": ("ort", {"path": str(files.file(v)), "shape": size, "backend": settings.backend})
                  for v in ("plain", "one", "ten", "ten_keep", "one_output")}
        for optimized in (False, True):
            name = f"ort_mc8_{'optimized' if optimized else 'naive'}"
            probes[name] = ("ort", {"path": str(mc_file(model, optimized, work)), "shape": size,
                                    "backend": settings.backend})
        probes |= {f"torch_{v}": ("torch", {"model": model, "shape": size, "variant": v}) for v in ("plain", "ten")}
        probes["torch_backprop_crop"] = ("backprop", {"model": model, "crop": plan.crops[0], "pixels": BACKPROP_PIXELS})
        for name, (kind, kwargs) in probes.items():
            log(f"memory: {model} {name}")
            records.append({"model": model, "method": name, "size": list(size),
                            **({"crop": list(plan.crops[0])} if kind == "backprop" else {}),
                            **memory.measure(kind, **kwargs, **common)})
    return records


def run_study(plan: Plan, settings: Settings, work: Path) -> dict[str, Any]:
    """Every section of ``plan``; returns the results document (see ``report.py``)."""
    started = time.time()
    doc: dict[str, Any] = {"machine": machine_info(), "settings": dataclasses.asdict(settings),
                           "plan": {"models": list(plan.models), "sizes": [list(s) for s in plan.sizes],
                                    "focus": list(plan.focus), "crops": [list(c) for c in plan.crops],
                                    "sections": list(plan.sections), "variants": list(plan.variants)}}
    if "overhead" in plan.sections:
        doc["overhead"] = overhead.run(list(plan.models), list(plan.sizes), list(plan.variants), settings, work)
    if "methods" in plan.sections:
        doc["methods"] = [methods.run(m, plan.focus, settings, work) for m in plan.models if m in MC_MODELS]
    if "backprop" in plan.sections:
        doc["backprop"] = []
        for model in [m for m in plan.models if m in MC_MODELS]:
            for crop in plan.crops:
                log(f"backprop: {model} crop {crop[0]}x{crop[1]}")
                doc["backprop"].append(backprop.run(model, crop, BACKPROP_PIXELS))
    if "profile" in plan.sections:
        doc["profile"] = []
        for model in [m for m in plan.models if m in MC_MODELS]:
            for variant in [v for v in PROFILED if v in plan.variants]:
                log(f"profile: {model} {variant}")
                files = ModelFiles(model, work)
                doc["profile"].append(profile_ops.run(files.variant(variant), files.plain(), plan.focus, settings))
    if "memory" in plan.sections:
        doc["memory"] = _memory(plan, settings, work)
    if "fp16" in plan.sections and "deeplabv3_mobilenet_v3_large" in plan.models:
        doc["fp16"] = fp16.run("deeplabv3_mobilenet_v3_large", sorted({plan.sizes[0], plan.focus}), settings, work)
    doc["targets"] = evaluate(doc)
    doc["duration_s"] = time.time() - started
    doc["machine_after"] = {"load_average": machine_info()["load_average"]}
    return doc
