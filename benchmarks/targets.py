"""The issue's targets, evaluated on the study's results (reported, never asserted).

A ratio target is ``met`` when the measured ratio is within it; ``certain`` says whether the
whole 95 % interval is on the same side of the threshold (otherwise the noise on this machine
does not settle it).
"""
from __future__ import annotations

from typing import Any

HEADLINE_MODEL = "deeplabv3_mobilenet_v3_large"
HEADLINE_SIZE = [512, 1024]
OVERHEAD_TARGETS = (("one", 1.01, "one map at most 1 % over plain"),
                    ("ten", 1.05, "ten maps at most 5 % over plain"),
                    ("ten_keep", 1.02, "ten maps at the classifier's size at most 2 % over plain"),
                    ("twenty", 1.10, "the published code's twenty maps (both layers) at most 10 % over plain"))
MC_NAIVE_FACTOR = 7.0
BACKPROP_FACTOR = 1e4


def _find(records: list[dict[str, Any]], model: str, size: list[int] | None = None) -> dict[str, Any] | None:
    return next((r for r in records if r["model"] == model and (size is None or r["size"] == size)), None)


def _overhead(doc: dict[str, Any]) -> list[dict[str, Any]]:
    record = _find(doc.get("overhead", {}).get("records", []), HEADLINE_MODEL, HEADLINE_SIZE)
    if record is None:
        return []
    kernel = {p["model"].split("/")[1].removesuffix(".pgn.onnx"): p["kernel_ratio"]
              for p in doc.get("profile", [])
              if p["model"].startswith(HEADLINE_MODEL + "/") and p["shape"] == HEADLINE_SIZE}
    found = []
    for variant, limit, text in OVERHEAD_TARGETS:
        ratio = record["ratio_to_plain"].get(variant)
        if ratio is None:
            continue
        found.append({"target": f"{HEADLINE_MODEL} {HEADLINE_SIZE[0]}x{HEADLINE_SIZE[1]}: {text}",
                      "value": ratio["value"], "low": ratio["low"], "high": ratio["high"], "threshold": limit,
                      "met": ratio["value"] <= limit, "certain": ratio["high"] <= limit or ratio["low"] > limit,
                      "kernel_ratio": kernel.get(variant)})
    return found


def control_ratio(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The headline's A/A control (``plain_again`` / ``plain``), if it was timed."""
    record = _find(doc.get("overhead", {}).get("records", []), HEADLINE_MODEL, HEADLINE_SIZE)
    return None if record is None else record["ratio_to_plain"].get("plain_again")


def headline_repeats(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios of each independent comparison the headline was timed in (empty if one)."""
    record = _find(doc.get("overhead", {}).get("records", []), HEADLINE_MODEL, HEADLINE_SIZE)
    return [] if record is None else record.get("repeats", [])


def _mc(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for record in doc.get("methods", []):
        latency = record["latency_ms"]
        if "mc8_naive" not in latency:
            continue
        pgn = latency["one"]["median_ms"]
        naive = latency["mc8_naive"]["median_ms"] / pgn
        optimized = latency["mc8_optimized"]["median_ms"] / pgn
        size = "x".join(map(str, record["size"]))
        found.append({"target": f"{record['model']} {size}: PGN (one map) >= {MC_NAIVE_FACTOR:g}x faster "
                                "than naive MC dropout (8)",
                      "value": naive, "threshold": MC_NAIVE_FACTOR, "met": naive >= MC_NAIVE_FACTOR})
        found.append({"target": f"{record['model']} {size}: PGN (one map) faster than optimized MC dropout (8)",
                      "value": optimized, "threshold": 1.0, "met": optimized > 1.0})
    return found


GRAFT_OF = {"feature": "one", "output": "one_output"}
"""The grafted variant that computes each naive quantity of :mod:`benchmarks.backprop` in
closed form: the default map, and the per-output-pixel map of ``--resolution output``."""


def backprop_speedups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model, crop and resolution: the naive method's seconds per image megapixel against
    the grafted closed form's (the PGN nodes' and the nodes ONNX Runtime inserts for them,
    kernel time in the profile of the variant :data:`GRAFT_OF` at the study's focus size, per
    image megapixel of that size)."""
    if not doc.get("backprop"):
        return []
    focus = doc["plan"]["focus"]
    focus_megapixels = focus[0] * focus[1] / 1e6
    profiles = {tuple(p["model"].split("/")): p for p in doc.get("profile", []) if p["shape"] == focus}
    rows = []
    for record in doc.get("backprop", []):
        for resolution, variant in GRAFT_OF.items():
            profile = profiles.get((record["model"], f"{variant}.pgn.onnx"))
            if profile is None or resolution not in record:
                continue
            naive = record[resolution]["naive_s_per_image_megapixel"]
            graft = (profile["pgn_kernel_ms"] + profile["inserted_kernel_ms"]) / 1e3 / focus_megapixels
            rows.append({"model": record["model"], "crop": record["crop"], "resolution": resolution,
                         "naive_s_per_image_megapixel": naive, "graft_s_per_image_megapixel": graft,
                         "speedup": naive / graft})
    return rows


def _backprop(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One target per model and resolution, from the largest crop measured (the least
    extrapolated)."""
    largest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in backprop_speedups(doc):
        key = (row["model"], row["resolution"])
        if key not in largest or row["crop"][0] * row["crop"][1] > largest[key]["crop"][0] * largest[key]["crop"][1]:
            largest[key] = row
    return [{"target": f"{row['model']} ({row['resolution']} resolution, naive cost measured on a "
                       f"{row['crop'][0]}x{row['crop'][1]} crop): closed form >= 10^4x faster per image megapixel "
                       f"than per-pixel backprop",
             "value": row["speedup"], "threshold": BACKPROP_FACTOR, "met": row["speedup"] >= BACKPROP_FACTOR}
            for row in largest.values()]


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the results allow to evaluate."""
    return _overhead(doc) + _mc(doc) + _backprop(doc)
