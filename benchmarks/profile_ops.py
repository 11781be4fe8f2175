"""Where the grafted model's time goes: ONNX Runtime's per-node profile (CPU provider).

The grafted model and its plain model are profiled in turn; each node's kernel time is its
minimum over the runs (the least disturbed by other jobs on a shared machine). The network's
nodes are the same in both models, so their difference is noise; the kernel-time ratio is
therefore ``1 + (PGN nodes + inserted nodes) / plain total``, far steadier than end-to-end
timing on a busy machine, though it leaves out the executor's per-node overhead. Nodes of the PGN
subgraph are told apart structurally (:func:`pgn_deploy.engines.subgraph.split_nodes`); nodes
ONNX Runtime inserts only in the grafted model (e.g. ``ReorderOutput``, a layout change so
that the PGN nodes can read the classifier's input) are counted separately, by op type
(:func:`inserted_by_op`).
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.common import Settings
from pgn_deploy.contract import read_metadata
from pgn_deploy.engines.subgraph import split_nodes

RUNS = 10
TOP = 12


def node_minima(path: Path, shape: tuple[int, int], settings: Settings,
                image: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Per node: the minimum kernel time (ms) over :data:`RUNS` runs, and its op type. ``image``:
    what the first input is fed (default: a random float32 1 x 3 x H x W image of ``shape``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="pgn_profile_") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if image is None:
            image = np.random.default_rng(0).standard_normal((1, 3, *shape)).astype(np.float32)
        for _ in range(RUNS):
            session.run(None, {session.get_inputs()[0].name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            times[name].append(event["dur"] / 1e3)
            ops[name] = event["args"].get("op_name", "?")
    return {name: min(values) for name, values in times.items()}, ops


def inserted_by_op(grafted: dict[str, float], ops: dict[str, str], plain: dict[str, float],
                   plain_ops: dict[str, str]) -> dict[str, tuple[int, float]]:
    """Per op type that ONNX Runtime runs more often in the grafted model outside the PGN
    nodes (``grafted``) than in the plain one: (extra nodes, extra kernel ms = the type's total
    in the grafted model minus its total in the plain one). Op types, not node names, are
    compared: ONNX Runtime numbers the layout nodes it inserts (``ReorderOutput_token_<k>``)
    per graph, so one extra node renames the others, and a PGN node it fuses with a
    neighbour (``FusedMatMul``) gets a new name."""
    out = {}
    for op in sorted(set(ops[name] for name in grafted)):
        mine = [ms for name, ms in grafted.items() if ops[name] == op]
        theirs = [ms for name, ms in plain.items() if plain_ops[name] == op]
        if len(mine) > len(theirs):
            out[op] = (len(mine) - len(theirs), sum(mine) - sum(theirs))
    return out


def run(path: Path, plain: Path, shape: tuple[int, int], settings: Settings) -> dict[str, Any]:
    """Kernel times of the grafted ``path`` against ``plain`` at ``shape``."""
    model = onnx.load(str(path))
    _, added = split_nodes(model, read_metadata(model))
    pgn_nodes = {node.name for node in added}
    grafted, ops = node_minima(path, shape, settings)
    baseline, baseline_ops = node_minima(plain, shape, settings)
    pgn = {name: ms for name, ms in grafted.items() if name in pgn_nodes}
    inserted = inserted_by_op(
        {name: ms for name, ms in grafted.items() if name not in pgn_nodes}, ops, baseline, baseline_ops)
    inserted_ms = sum(ms for _, ms in inserted.values())
    total, plain_total = sum(grafted.values()), sum(baseline.values())
    top = sorted(pgn.items(), key=lambda item: -item[1])[:TOP]
    return {
        "model": f"{path.parent.name}/{path.name}",
        "shape": list(shape),
        "runs": RUNS,
        "total_kernel_ms": total,
        "plain_kernel_ms": plain_total,
        "kernel_ratio": 1.0 + (sum(pgn.values()) + inserted_ms) / plain_total,
        "pgn_kernel_ms": sum(pgn.values()),
        "inserted_kernel_ms": inserted_ms,
        "inserted_nodes": {op: count for op, (count, _) in sorted(inserted.items())},
        "pgn_share_percent": 100.0 * sum(pgn.values()) / total,
        "top_pgn_nodes": [{"node": name, "op": ops[name], "ms": ms} for name, ms in top],
        "pgn_ms_by_op": {op: sum(ms for name, ms in pgn.items() if ops[name] == op)
                         for op in sorted({ops[n] for n in pgn})},
    }
