"""Deployment latency: the grafted model that takes camera frames vs the plain model fed by Python.

``python -m benchmarks.deploy_ratio --out benchmarks/results`` times, interleaved in one process
(ONNX Runtime CPU, 1 intra-op thread, CPU-time clock by default, as the main study), on one
BGR camera frame of deeplabv3_mobilenet_v3_large's 512 x 1024 input:

* ``plain``: what a client of the plain float model does per frame: Python preprocessing
  (:func:`pgn_deploy.runtime.preprocess.preprocess_image`: channel order, float32, mean/std,
  NCHW) then the plain model, every output fetched;
* ``deploy``: the grafted one-map model (``pgn_uni_p0.5``) exported for deployment, with
  ``--normalize --input-format uint8-nhwc-bgr`` (calibrated on 4 in-distribution SynthRoad
  frames): the frame fed as it is, every output fetched (logits, map, ``_norm``, ``ood_mask``);
* ``uint8_only``: the same graft with ``--input-format uint8-nhwc-bgr`` only (no ranks, no
  mask): what the in-graph preprocessing alone costs or saves;
* ``grafted_float``: the same grafted model without the deployment steps, fed like ``plain``;
* ``plain_again``: a second plain session (A/A control: what two sessions of one model differ by).

The ratio to ``plain`` is the ratio of medians with a paired bootstrap 95 % interval, pooled
over ``--repeats`` comparisons with fresh sessions. Where the time goes (:func:`breakdown`):
ONNX Runtime's per-node kernel-time minima of the deploy model (in-graph preprocessing, rank
and mask, PGN subgraph, layout nodes ONNX Runtime inserts) against the plain model's, and the
Python preprocessing's minimum on the same clock. The network has random weights (speed does
not depend on them). Writes ``latency_deploy.json`` and ``latency_deploy.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.common import Settings, interleave, log, pool, summarize
from benchmarks.models import ModelFiles
from benchmarks.profile_ops import RUNS, inserted_by_op, node_minima
from pgn_deploy.benchmark.machine import machine_info
from pgn_deploy.benchmark.timing import get_clock
from pgn_deploy.contract import atomic_write_text, read_metadata, save_onnx, write_metadata
from pgn_deploy.engines.subgraph import split_nodes
from pgn_deploy.graft.deploy import prepare_deployment
from pgn_deploy.graft.normalize import PREFIX as NORM_PREFIX
from pgn_deploy.graft.preprocess import PREFIX as PRE_PREFIX
from pgn_deploy.runtime.backends.base import BackendOptions, open_backend
from pgn_deploy.runtime.calibrate import measure_calibration
from pgn_deploy.runtime.preprocess import preprocess_image
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.synthroad.generator import generate_frame

MODEL = "deeplabv3_mobilenet_v3_large"
SIZE = (512, 1024)
TARGET = 1.02
INPUT_FORMAT = "uint8-nhwc-bgr"
CALIBRATION_FRAMES = 4


def deploy_model(files: ModelFiles, work: Path, normalize: bool = True) -> Path:
    """The one-map graft, calibrated on SynthRoad ``val`` frames, with uint8 BGR input and (with
    ``normalize``) ``_norm``/``ood_mask``."""
    path = work / ("deploy.pgn.onnx" if normalize else "uint8_only.pgn.onnx")
    if path.is_file():
        return path
    grafted = files.variant("one")
    frames = [generate_frame(3, i, "val", SIZE).image for i in range(CALIBRATION_FRAMES)]
    calibration, _ = measure_calibration(Runtime(grafted, "ort-cpu"), frames)
    model = onnx.load(str(grafted))
    meta = read_metadata(model)
    meta.calibration = calibration
    write_metadata(model, meta)
    save_onnx(prepare_deployment(model, normalize=normalize, input_format=INPUT_FORMAT), path)
    return path


def _session_call(path: Path, settings: Settings, frame: np.ndarray, python_preprocessing: bool,
                  info: Any) -> Callable[[], object]:
    """One inference of ``path`` on ``frame`` (BGR uint8), every output fetched; with
    ``python_preprocessing`` the frame goes through :func:`preprocess_image` first, in the call."""
    backend, _ = open_backend(path, settings.backend, BackendOptions(intra_op_threads=settings.threads))
    name = backend.input_names[0]
    outputs = backend.output_names
    if python_preprocessing:
        return lambda: backend.run({name: preprocess_image(frame, "BGR", info, np.dtype(np.float32))[None]}, outputs)
    return lambda: backend.run({name: frame[None]}, outputs)


def breakdown(deploy: Path, plain: Path, frame: np.ndarray, info: Any, settings: Settings) -> dict[str, Any]:
    """Kernel-time minima (ms, over :data:`~benchmarks.profile_ops.RUNS` profiled runs) of the
    deploy model's added parts, the plain model's total, and the Python preprocessing's minimum
    (``settings.clock``); ``added_minus_python_ms`` is what the deploy model adds per frame."""
    model = onnx.load(str(deploy), load_external_data=False)
    _, added = split_nodes(model, read_metadata(model))
    pgn_nodes = {node.name for node in added}
    times, ops = node_minima(deploy, SIZE, settings, image=frame[None])
    plain_times, plain_ops = node_minima(plain, SIZE, settings)
    pre = {n: ms for n, ms in times.items() if n.startswith(PRE_PREFIX)}
    norm = {n: ms for n, ms in times.items() if n.startswith(NORM_PREFIX)}
    pgn = {n: ms for n, ms in times.items() if n in pgn_nodes and n not in norm}
    rest = {n: ms for n, ms in times.items() if n not in pre and n not in norm and n not in pgn}
    inserted = inserted_by_op(rest, ops, plain_times, plain_ops)
    clock = get_clock(settings.clock)
    python = []
    for _ in range(RUNS):
        start = clock()
        preprocess_image(frame, "BGR", info, np.dtype(np.float32))
        python.append((clock() - start) * 1e3)
    parts = {"preprocessing": sum(pre.values()), "rank_and_mask": sum(norm.values()),
             "pgn_map": sum(pgn.values()), "inserted_layout": sum(ms for _, ms in inserted.values())}
    return {
        "parts_ms": parts,
        "rank_and_mask_by_op_ms": {op: sum(ms for n, ms in norm.items() if ops[n] == op)
                                   for op in sorted({ops[n] for n in norm})},
        "preprocessing_by_node_ms": pre,
        "inserted_nodes": {op: count for op, (count, _) in sorted(inserted.items())},
        "plain_kernel_ms": sum(plain_times.values()),
        "python_preprocessing_ms": min(python),
        "added_minus_python_ms": sum(parts.values()) - min(python),
    }


def run(settings: Settings, work: Path, repeats: int) -> dict[str, Any]:
    """Time the four calls ``repeats`` times with fresh sessions; the results document."""
    files = ModelFiles(MODEL, work)
    deploy, uint8_only = deploy_model(files, work), deploy_model(files, work, normalize=False)
    info = read_metadata(files.variant("one")).input
    frame = np.ascontiguousarray(generate_frame(11, 0, "val", SIZE).image[..., ::-1])  # RGB -> BGR, as OpenCV reads
    runs = []
    for repeat in range(repeats):
        log(f"comparison {repeat + 1}/{repeats}")
        calls = {
            "plain": _session_call(files.plain(), settings, frame, True, info),
            "deploy": _session_call(deploy, settings, frame, False, info),
            "uint8_only": _session_call(uint8_only, settings, frame, False, info),
            "grafted_float": _session_call(files.variant("one"), settings, frame, True, info),
            "plain_again": _session_call(files.plain(), settings, frame, True, info),
        }
        runs.append(interleave(calls, settings))
    log("profiling where the time goes")
    where = breakdown(deploy, files.plain(), frame, info, settings)
    summary = summarize(pool(runs))
    summary["per_comparison"] = [summarize(r)["ratio_to_plain"] for r in runs]
    ratio = summary["ratio_to_plain"]["deploy"]
    return {
        "machine": machine_info(),
        "settings": {"backend": settings.backend, "threads": settings.threads, "clock": settings.clock,
                     "budget_s": settings.budget_s, "repeats": repeats},
        "model": MODEL, "size": list(SIZE), "input_format": INPUT_FORMAT,
        "deploy_outputs": [o.name for o in onnx.load(str(deploy), load_external_data=False).graph.output],
        "summary": summary,
        "breakdown": where,
        "target": {"ratio": TARGET, "met": ratio["value"] <= TARGET, "certain": ratio["high"] <= TARGET
                   or ratio["low"] > TARGET},
    }


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of :func:`run`'s document."""
    m, s = doc["machine"], doc["summary"]
    lines = [
        "# Deployment latency: uint8 frames in, normalisation and OoD mask in the graph",
        "",
        f"{doc['model']} at {doc['size'][0]}x{doc['size'][1]}, ONNX Runtime CPU, {doc['settings']['threads']} "
        f"intra-op thread(s), clock `{doc['settings']['clock']}`, {s['rounds']} interleaved rounds over "
        f"{doc['settings']['repeats']} comparisons with fresh sessions.",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['date_utc']}; load average before "
        f"{s['load_before']}, after {s['load_after']}.",
        "",
        "| call | median ms | ratio to plain [95 % interval] |",
        "|---|---|---|",
    ]
    texts = {"plain": "plain float model, Python preprocessing", "deploy":
             f"grafted, --normalize --input-format {doc['input_format']}, frame as it is",
             "uint8_only": f"grafted, --input-format {doc['input_format']} only, frame as it is",
             "grafted_float": "grafted (1 map), float input, Python preprocessing",
             "plain_again": "plain again (A/A control)"}
    for name, stats in s["latency_ms"].items():
        ratio = s["ratio_to_plain"].get(name)
        shown = f"{ratio['value']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]" if ratio else "1"
        lines.append(f"| {texts[name]} | {stats['median_ms']:.1f} | {shown} |")
    target = doc["target"]
    verdict = "met" if target["met"] else "missed"
    certainty = "" if target["certain"] else " (within noise: the interval straddles it)"
    lines += ["", f"Target: deploy / plain <= {target['ratio']:.2f}: **{verdict}**{certainty} "
              "(the first row's ratio; the others say where the time goes).",
              "Per comparison (deploy / plain): " + ", ".join(f"{r['deploy']['value']:.3f}"
                                                              for r in s["per_comparison"]) + ".", ""]
    b = doc["breakdown"]
    parts = b["parts_ms"]
    lines += [
        "## Where the time goes (kernel-time minima, ONNX Runtime profile)",
        "",
        f"Plain model {b['plain_kernel_ms']:.1f} ms. Added by the deploy model: in-graph preprocessing "
        f"{parts['preprocessing']:.2f} ms, percentile rank and mask {parts['rank_and_mask']:.2f} ms, PGN map "
        f"{parts['pgn_map']:.2f} ms, nodes ONNX Runtime runs only in it (inserted layout changes, fused PGN nodes) "
        f"{parts['inserted_layout']:.2f} ms "
        f"({', '.join(f'{op} x{n}' for op, n in b['inserted_nodes'].items()) or 'none'}); the Python "
        f"preprocessing it replaces: {b['python_preprocessing_ms']:.2f} ms. Net: "
        f"{b['added_minus_python_ms']:+.2f} ms per frame.",
        "Rank and mask by op: " + ", ".join(f"{op} {ms:.2f}" for op, ms in b["rank_and_mask_by_op_ms"].items())
        + " ms.", "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and write ``latency_deploy.json``/``.md`` into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy_ratio", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timing per comparison")
    parser.add_argument("--repeats", type=int, default=2, help="comparisons with fresh sessions")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--work", help="folder for the models (default: a temporary one)")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files")
    args = parser.parse_args(argv)
    settings = Settings(threads=args.threads, budget_s=args.budget, max_rounds=args.max_rounds, clock=args.clock)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="pgn_deploy_bench_") as tmp:
        doc = run(settings, Path(args.work) if args.work else Path(tmp), args.repeats)
    atomic_write_text(out / "latency_deploy.json", json.dumps(doc, indent=2, sort_keys=True) + "\n", args.force)
    atomic_write_text(out / "latency_deploy.md", markdown(doc), args.force)
    log(f"wrote {out / 'latency_deploy.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
