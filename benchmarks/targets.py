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
                    ("ten_keep", 1.02, "ten maps at the classifier's size at most 2 % over plain"))
MC_NAIVE_FACTOR = 7.0
BACKPROP_FACTOR = 1e4


def _find(records: list[dict[str, Any]], model: str, size: list[int] | None = None) -> dict[str, Any] | None:
    return next((r for r in records if r["model"] == model and (size is None or r["size"] == size)), None)


def _overhead(doc: dict[str, Any]) -> list[dict[str, Any]]:
    record = _find(doc.get("overhead", {}).get("records", []), HEADLINE_MODEL, HEADLINE_SIZE)
    if record is None:
        return []
    kernel = {p["model"].split("/")[1].removesuffix(".pgn.onnx"): p["kernel_ratio"]
              for p in doc.get("profile", []) if p["model"].startswith(HEADLINE_MODEL + "/") and p["shape"] == HEADLINE_SIZE}
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
        found.append({"target": f"{record['model']} {size}: PGN (one map) >= {MC_NAIVE_FACTOR:g}x faster than naive MC dropout (8)",
                      "value": naive, "threshold": MC_NAIVE_FACTOR, "met": naive >= MC_NAIVE_FACTOR})
        found.append({"target": f"{record['model']} {size}: PGN (one map) faster than optimized MC dropout (8)",
                      "value": optimized, "threshold": 1.0, "met": optimized > 1.0})
    return found


def backprop_speedups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model and crop: naive seconds per classifier megapixel against the grafted closed
    form's (the PGN nodes' kernel time of the one-map model in the profile, per classifier
    megapixel of the profiled size)."""
    profiles = {(p["model"].split("/")[0], p["model"].split("/")[1]): p for p in doc.get("profile", [])}
    rows = []
    for record in doc.get("backprop", []):
        profile = profiles.get((record["model"], "one.pgn.onnx"))
        if profile is None:
            continue
        focus = doc["plan"]["focus"]
        classifier_pixels = _classifier_pixels(doc, record["model"], focus)
        graft_s_per_mp = profile["pgn_kernel_ms"] / 1e3 / (classifier_pixels / 1e6)
        rows.append({"model": record["model"], "crop": record["crop"],
                     "naive_s_per_megapixel": record["naive_s_per_megapixel"],
                     "graft_s_per_megapixel": graft_s_per_mp,
                     "speedup": record["naive_s_per_megapixel"] / graft_s_per_mp})
    return rows


def _classifier_pixels(doc: dict[str, Any], model: str, size: list[int]) -> float:
    """Classifier pixels of ``model`` at ``size``, scaled from a back-propagation crop."""
    record = next(r for r in doc["backprop"] if r["model"] == model)
    scale = (size[0] * size[1]) / (record["crop"][0] * record["crop"][1])
    return record["classifier_size"][0] * record["classifier_size"][1] * scale


def _backprop(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"target": f"{row['model']} (per-pixel cost measured on a {row['crop'][0]}x{row['crop'][1]} crop): "
                       f"closed form >= 10^4x faster per megapixel than per-pixel backprop",
             "value": row["speedup"], "threshold": BACKPROP_FACTOR, "met": row["speedup"] >= BACKPROP_FACTOR}
            for row in backprop_speedups(doc)]


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the results allow to evaluate."""
    return _overhead(doc) + _mc(doc) + _backprop(doc)
