"""Write the study's results: ``latency_study.json``, ``latency_study.md`` and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.backprop import RESOLUTIONS
from benchmarks.targets import backprop_speedups, control_ratio, headline_repeats
from pgn_deploy.contract import atomic_write, atomic_write_text

PREFIX = "latency_"
VARIANT_TEXT = {
    "one": "1 map", "ten": "10 maps", "one_keep": "1 map, classifier size", "ten_keep": "10 maps, classifier size",
    "one_output": "1 map, resolution output", "ten_output": "10 maps, resolution output",
    "ten_penultimate": "10 penultimate maps", "twenty": "20 maps (both layers)",
    "plain_again": "plain again (A/A control)",
}


def _size(size: list[int]) -> str:
    return f"{size[0]}x{size[1]}"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def _machine(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    s = doc["settings"]
    return [
        f"Run {m['date_utc']} on {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gib']} GiB; {m['os']}; "
        f"Python {m['python']}; {packages}.",
        f"Backend `{s['backend']}`, {s['threads']} intra-op threads, PyTorch on `{s['torch_device']}`, "
        f"{s.get('clock', 'wall')} clock. "
        f"Load average (1/5/15 min) at the start {m['load_average']}, at the end "
        f"{doc['machine_after']['load_average']}; the study took {doc['duration_s'] / 60:.1f} min.",
        "",
        "Every comparison runs its variants interleaved in one process (alternating order each round, each "
        "timed call right after an untimed call of the same variant, so that every variant is timed in steady state); "
        "ratios are ratios of medians with a paired-bootstrap 95 % interval in brackets. The load average "
        "above says whether other jobs shared the machine: read absolute times as indicative and the "
        "intervals as the noise that remained.",
    ]


def _targets(doc: dict[str, Any]) -> list[str]:
    lines = ["| target | measured | threshold | met | kernel-time ratio (profile) |", "|---|---|---|---|---|"]
    for t in doc.get("targets", []):
        value = _ratio(t) if "low" in t else f"{t['value']:.3g}"
        met = ("yes" if t["met"] else "no") + ("" if t.get("certain", True) else " (within noise)")
        kernel = f"{t['kernel_ratio']:.3f}" if t.get("kernel_ratio") else "-"
        lines.append(f"| {t['target']} | {value} | {t['threshold']:g} | {met} | {kernel} |")
    control = control_ratio(doc)
    if control is not None:
        lines += ["", f"A/A control: a second session of the same plain model, timed in the same rounds, measured "
                      f"{_ratio(control)} against the first. End-to-end ratios closer to 1 than this are within what "
                      f"two sessions of one model differ by here; the kernel-time ratio does not have this bias."]
    repeats = headline_repeats(doc)
    if repeats:
        per_variant = "; ".join(f"{VARIANT_TEXT.get(name, name)} "
                                + " / ".join(f"{run[name]['value']:.3f}" for run in repeats)
                                for name in repeats[0])
        lines += ["", f"The headline was timed as {len(repeats)} independent comparisons, each with fresh sessions; "
                      f"the measured values above pool their rounds. Each comparison on its own: {per_variant}."]
    return lines


def _overhead(doc: dict[str, Any]) -> list[str]:
    section = doc["overhead"]
    variants = [v for v in VARIANT_TEXT if any(v in r["ratio_to_plain"] for r in section["records"])]
    lines = ["Rounds: feature-resolution group / resolution-output group (each with its own plain runs).", "",
             "| model | size | plain ms | " + " | ".join(VARIANT_TEXT[v] for v in variants) + " | rounds |",
             "|---|---|---|" + "---|" * len(variants) + "---|"]
    for r in section["records"]:
        cells = [_ratio(r["ratio_to_plain"][v]) if v in r["ratio_to_plain"] else "-" for v in variants]
        lines.append(f"| {r['model']} | {_size(r['size'])} | {r['latency_ms']['plain']['median_ms']:.1f} | "
                     + " | ".join(cells) + " | " + "/".join(str(n) for n in r["rounds"].values()) + " |")
    if section["skipped"]:
        lines += ["", "Not measured:", *[f"- {why}" for why in section["skipped"]]]
    if section["scaling"]:
        lines += ["", "Latency against pixel count (f): log-log slope of the median (1 = linear):", "",
                  "| model | variant | slope | sizes (pixels) |", "|---|---|---|---|"]
        for f in section["scaling"]:
            lines.append(f"| {f['model']} | {f['variant']} | {f['slope']:.2f} | {', '.join(map(str, f['pixels']))} |")
    return lines


def _methods(doc: dict[str, Any]) -> list[str]:
    lines = []
    for r in doc["methods"]:
        lines += [f"**{r['model']} at {_size(r['size'])}** ({r['rounds']} rounds)", "",
                  "| method | median ms | p90 ms | ratio to ONNX plain |", "|---|---|---|---|"]
        for name, stats in r["latency_ms"].items():
            ratio = _ratio(r["ratio_to_plain"][name]) if name != "plain" else "1"
            lines.append(f"| {name} | {stats['median_ms']:.1f} | {stats['p90_ms']:.1f} | {ratio} |")
        lat = r["latency_ms"]
        torch_overhead = lat["torch_ten"]["median_ms"] / lat["torch_plain"]["median_ms"]
        lines += ["", f"PGN (10 maps) in PyTorch eager costs {100 * (torch_overhead - 1):+.1f} % over the eager "
                      f"forward; the grafted ONNX model with 10 maps runs in "
                      f"{lat['ten']['median_ms'] / lat['torch_ten']['median_ms']:.2f}x the time of eager + PGN."]
        if "mc8_naive" in lat:
            lines.append("MC dropout (8 samples): naive "
                         f"{lat['mc8_naive']['median_ms'] / lat['one']['median_ms']:.1f}x, "
                         f"optimized {lat['mc8_optimized']['median_ms'] / lat['one']['median_ms']:.2f}x the latency of "
                         f"PGN (one map); split check max |diff| = {r['mc']['split_max_abs_diff']:.1e}.")
        lines += [*(f"- {note}" for note in r["notes"]), ""]
    return lines


def _backprop(doc: dict[str, Any]) -> list[str]:
    lines = ["Per resolution: `feature` is one backward pass per pixel of the classifier's map (the default "
             "graft's quantity), `output` one per pixel of the model's output through its resize of the logits "
             "(the per-output-pixel map of `--resolution output`; a megapixel needs 10^6 passes). Costs are per image "
             "megapixel, so both methods are charged for the same map of the same image.", "",
             "| model | crop | resolution | map | naive s/pixel | naive s per image MP "
             "| closed form (torch) s per image MP | speedup (torch, same crop) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["backprop"]:
        for resolution in RESOLUTIONS:
            q = r[resolution]
            lines.append(f"| {r['model']} | {_size(r['crop'])} | {resolution} | {_size(q['map_size'])} | "
                         f"{q['naive_s_per_pixel']:.2e} | {q['naive_s_per_image_megapixel']:.3g} | "
                         f"{q['closed_form_torch_s_per_image_megapixel']:.3g} | {q['speedup_closed_form_torch']:.3g} |")
    rows = backprop_speedups(doc)
    if rows:
        lines += ["", "Against the grafted closed form (PGN nodes and the nodes ONNX Runtime inserts for them, kernel "
                      f"time in the profile at {_size(doc['plan']['focus'])}: `one` for `feature`, `one_output` for "
                      "`output`):", "",
                  "| model | naive measured on | resolution | naive s per image MP | graft s per image MP | speedup |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {_size(r['crop'])} | {r['resolution']} | {r['naive_s_per_image_megapixel']:.3g} | "
                  f"{r['graft_s_per_image_megapixel']:.3g} | {r['speedup']:.3g} |" for r in rows]
    return lines


def _memory(doc: dict[str, Any]) -> list[str]:
    lines = ["| model | method | size | peak RSS MiB | increase over the loaded libraries MiB |",
             "|---|---|---|---|---|"]
    for r in doc["memory"]:
        size = _size(r.get("crop", r["size"])) + (" (crop)" if "crop" in r else "")
        lines.append(f"| {r['model']} | {r['method']} | {size} | {r['peak_rss_mb']:.0f} | {r['increase_mb']:.0f} |")
    if doc["memory"]:
        lines += ["", f"Source: {doc['memory'][0]['source']}; one fresh process per row (load + 3 runs)."]
    return lines


def _fp16(doc: dict[str, Any]) -> list[str]:
    section = doc["fp16"]
    if "error" in section:
        return [f"Not measured: {section['error']}"]
    lines = ["| model | size | fp32 ms | fp16 ms | fp16/fp32 |", "|---|---|---|---|---|"]
    for r in section["records"]:
        lat = r["latency_ms"]
        lines.append(f"| {section['model']} ({section['variant']}) | {_size(r['size'])} "
                     f"| {lat['fp32']['median_ms']:.1f} | {lat['fp16']['median_ms']:.1f} "
                     f"| {_ratio(r['ratio_to_fp32']['fp16'])} |")
    return lines


def _profile(doc: dict[str, Any]) -> list[str]:
    lines = ["Per node the minimum kernel time over the runs; sums over the graph. `PGN nodes`: the graft's; "
             "`inserted`: nodes ONNX Runtime adds only to the grafted model (layout changes); "
             "kernel ratio = 1 + (PGN + inserted) / plain total.", "",
             "| model | shape | kernel ms grafted / plain | kernel ratio | PGN nodes ms | inserted ms "
             "| costliest PGN nodes |",
             "|---|---|---|---|---|---|---|"]
    for p in doc["profile"]:
        top = ", ".join(f"{n['op']} {n['ms']:.2f}" for n in p["top_pgn_nodes"][:5])
        lines.append(f"| {p['model']} | {_size(p['shape'])} | {p['total_kernel_ms']:.1f} / {p['plain_kernel_ms']:.1f} "
                     f"| {p['kernel_ratio']:.3f} | {p['pgn_kernel_ms']:.2f} | {p['inserted_kernel_ms']:.2f} "
                     f"| {top} |")
    return lines


SECTIONS = (
    ("overhead", "(a) Grafted / plain latency ratio, (f) scaling", _overhead),
    ("methods", "(b) PyTorch eager PGN, (c) MC dropout, against the grafted graph", _methods),
    ("backprop", "(d) Per-pixel back-propagation against the closed form", _backprop),
    ("memory", "(e) Peak memory", _memory),
    ("fp16", "(g) fp16 against fp32", _fp16),
    ("profile", "Where the time goes (ONNX Runtime profile, per-node minima)", _profile),
)


def markdown(doc: dict[str, Any], plots: list[str]) -> str:
    """The Markdown report of a results document."""
    lines = ["# PGN latency study", "", *_machine(doc), "", "## Targets", "", *_targets(doc)]
    for key, title, render in SECTIONS:
        if key in doc:
            lines += ["", f"## {title}", "", *render(doc)]
    if plots:
        lines += ["", "## Plots", "", *[f"![{name}]({name})" for name in plots]]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], out: Path, name: str, force: bool) -> list[Path]:
    """Write ``latency_<name>.json``/``.md`` and ``latency_<name>_<plot>.png`` into ``out``
    (existing files are replaced only with ``force``)."""
    from benchmarks.plots import PLOTS

    written = []
    plots = []
    for plot, (applies, draw) in PLOTS.items():
        if not applies(doc):
            continue
        path = out / f"{PREFIX}{name}_{plot}.png"
        written.append(atomic_write(path, lambda tmp, d=draw: d(doc, tmp), force=force))
        plots.append(path.name)
    written.append(atomic_write_text(out / f"{PREFIX}{name}.json", json.dumps(doc, indent=1, sort_keys=True),
                                     force=force))
    written.append(atomic_write_text(out / f"{PREFIX}{name}.md", markdown(doc, plots), force=force))
    return written
