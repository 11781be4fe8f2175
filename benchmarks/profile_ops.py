"""Where the grafted model's time goes: ONNX Runtime's per-node profile (CPU provider).

Kernel times per node are the median over the profiled runs; nodes of the PGN subgraph are
told apart structurally (:func:`pgn_deploy.engines.subgraph.split_nodes`).
"""
from __future__ import annotations

import json
import statistics
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

RUNS = 5
TOP = 12


def run(path: Path, shape: tuple[int, int], settings: Settings) -> dict[str, Any]:
    """Per-node kernel times of ``path`` at ``shape``: totals, PGN share, the costliest PGN nodes."""
    model = onnx.load(str(path))
    _, added = split_nodes(model, read_metadata(model))
    pgn_nodes = {node.name: node.op_type for node in added}
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="pgn_profile_") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, *shape)).astype(np.float32)}
        for _ in range(RUNS):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"][: -len("_kernel_time")]].append(event["dur"] / 1e3)
    per_node = {name: statistics.median(values) for name, values in times.items()}
    pgn = {name: ms for name, ms in per_node.items() if name in pgn_nodes}
    total = sum(per_node.values())
    top = sorted(pgn.items(), key=lambda item: -item[1])[:TOP]
    return {
        "model": str(path.parent.name) + "/" + path.name,
        "shape": list(shape),
        "total_kernel_ms": total,
        "pgn_kernel_ms": sum(pgn.values()),
        "pgn_share_percent": 100.0 * sum(pgn.values()) / total if total else None,
        "top_pgn_nodes": [{"node": name, "op": pgn_nodes[name], "ms": ms} for name, ms in top],
    }
