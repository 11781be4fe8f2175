"""Per-node kernel time of the k x k window sum beside a 1x1 classifier (``python -m benchmarks.kxk_head``).

segmentation_models_pytorch's Unet (ResNet-18) with its own 3x3 classifier and the same network
with a 1x1 one (:data:`benchmarks.models.BUILDERS`), grafted with one and ten maps, profiled
at 512 x 1024 by :func:`benchmarks.profile_ops.run` (per node the minimum kernel time over the
runs: steadier than end-to-end timing on a shared machine). The window sum is the PGN
subgraph's one-channel ``AveragePool`` counting the padding (times 9), one per p; its kernel time
is read from the profile, and both forms the graft can use (the pooling, and the ones-kernel
``Conv`` kept for dilated windows below opset 19) are also timed alone on a 1 x 1 x 512 x 1024
map (:func:`window_sum_alone_ms`).
Writes ``benchmarks/results/kxk_head_profile.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import onnx

from benchmarks.common import Settings, log
from benchmarks.models import ModelFiles
from benchmarks.profile_ops import run
from pgn_deploy.benchmark.machine import load_average, machine_info
from pgn_deploy.contract import read_metadata
from pgn_deploy.engines.subgraph import split_nodes

MODELS = ("smp_unet_resnet18", "smp_unet_resnet18_1x1")
VARIANTS = ("one", "ten")
SIZE = (512, 1024)


WINDOW_OPS = ("AveragePool", "Conv")


def window_sum_nodes(path: Path) -> set[str]:
    """Names of the PGN subgraph's window-sum nodes in the grafted model ``path``."""
    model = onnx.load(str(path))
    _, added = split_nodes(model, read_metadata(model))
    return {node.name for node in added if node.op_type in WINDOW_OPS}


def window_sum_alone_ms(op: str, size: tuple[int, int], threads: int, runs: int = 50) -> float:
    """Minimum over ``runs`` of one 3x3 window sum (pads 1) on a 1 x 1 x H x W float32 map:
    ``op`` ``AveragePool`` (counting the padding) or ``Conv`` (a ones kernel)."""
    import time

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if op == "Conv":
        node = helper.make_node("Conv", ["x", "ones"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    else:
        node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                count_include_pad=1)
    graph = helper.make_graph([node], "window_sum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "ones")])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, *size), dtype=np.float32)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kxk_head", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for the exported models (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="pgn_kxk_"))
    settings = Settings()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    rows = []
    for model in MODELS:
        files = ModelFiles(model, work)
        for variant in VARIANTS:
            log(f"kxk profile: {model} {variant}")
            result = run(files.variant(variant), files.plain(), SIZE, settings)
            result["window_sum_nodes"] = len(window_sum_nodes(files.variant(variant)))
            result["window_sum_ms"] = sum(ms for op, ms in result["pgn_ms_by_op"].items() if op in WINDOW_OPS)
            result["variant"] = variant
            rows.append(result)
    alone = {op: window_sum_alone_ms(op, SIZE, settings.threads) for op in WINDOW_OPS}
    doc = {"date": started.isoformat(timespec="seconds"), "machine": machine_info(), "load_before": load_before,
           "load_after": load_average(), "threads": settings.threads, "size": list(SIZE),
           "window_sum_alone_ms": alone, "results": rows}
    out = Path(args.out)
    (out / "kxk_head_profile.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "# k x k window sum beside a 1x1 classifier (ONNX Runtime CPU profile)", "",
        f"Run {doc['date']} on {doc['machine'].get('cpu', '?')}, {settings.threads} intra-op threads; load average "
        f"(1/5/15 min) {load_before} before, {doc['load_after']} after. Per node the minimum kernel time over the "
        "runs; kernel ratio = 1 + (PGN nodes + nodes ONNX Runtime inserts) / plain total. Window sums: the "
        "PGN subgraph's AveragePool nodes (one per p; none in the 1x1 model) and their kernel time.", "",
        f"One 3x3 window sum alone on a 1 x 1 x {SIZE[0]} x {SIZE[1]} map (minimum of 50 runs): AveragePool "
        f"{alone['AveragePool']:.2f} ms (what the graft uses), ones-kernel Conv {alone['Conv']:.2f} ms.", "",
        "| model | maps | window sums | window sum ms | plain kernel ms | PGN nodes ms | kernel ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['model'].split('/')[0]} | {1 if row['variant'] == 'one' else 10} | "
                     f"{row['window_sum_nodes']} | {row['window_sum_ms']:.2f} | {row['plain_kernel_ms']:.1f} | "
                     f"{row['pgn_kernel_ms']:.2f} | "
                     f"{row['kernel_ratio']:.4f} |")
    (out / "kxk_head_profile.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {out / 'kxk_head_profile.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
