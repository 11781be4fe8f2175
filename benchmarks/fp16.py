"""(g) The fp16 model (network in half precision, PGN subgraph float32) against fp32.

ONNX Runtime's CPU execution provider has no fast fp16 kernels on x86: it runs most fp16 nodes
through inserted casts to float32, so on ``ort-cpu`` the fp16 model is expected to be slower;
the comparison is meaningful on GPU backends (``--backend ort-cuda``/``ort-trt``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Settings, interleave, log, ort_call, summarize
from benchmarks.models import ModelFiles
from pgn_deploy.contract import PGNError

VARIANT = "ten"


def run(model: str, sizes: list[tuple[int, int]], settings: Settings, work: Path) -> dict[str, Any]:
    """fp16 vs fp32 latency of the ten-map graft of ``model`` at each size."""
    files = ModelFiles(model, work)
    fp32 = files.variant(VARIANT)
    fp16 = files.folder / f"{VARIANT}_fp16.pgn.onnx"
    try:
        if not fp16.is_file():
            from pgn_deploy.engines.precision import convert_precision

            convert_precision(fp32, fp16, "fp16")
    except (PGNError, ImportError) as exc:
        return {"model": model, "error": f"fp16 conversion failed: {exc}"}
    records = []
    for size in sizes:
        log(f"fp16: {model} {size[0]}x{size[1]}")
        calls = {"fp32": ort_call(fp32, settings, size), "fp16": ort_call(fp16, settings, size)}
        records.append({"size": list(size), **summarize(interleave(calls, settings), reference="fp32")})
    return {"model": model, "variant": VARIANT, "records": records}
