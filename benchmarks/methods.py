"""(b) PGN in PyTorch eager vs the grafted graph, (c) MC dropout vs PGN, interleaved.

For one model and size, every method runs in the same alternating rounds: ONNX plain / PGN
(one map, ten maps), PyTorch eager plain / + PGN (hooks, closed form in torch), and the MC
dropout models with 8 samples (naive and optimized). Ratios are to the ONNX plain model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Settings, interleave, log, ort_call, summarize
from benchmarks.eager import EagerPGN, main_output, torch_call
from benchmarks.mc_dropout import SAMPLES, SPLITS, mc_file, split_at_first_dropout
from benchmarks.models import VARIANTS, ModelFiles, build_module

CHECK_SIZE = (64, 128)


def check_split(model: str) -> float:
    """Largest difference between the network and suffix(prefix(x)) (dropout off): the split
    used by the optimized MC dropout computes the same logits."""
    net = build_module(model)
    prefix, suffix = split_at_first_dropout(model, net)
    x = torch.randn(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return float((main_output(net(x)) - suffix(prefix(x), x.shape[-2:])).abs().max())


def run(model: str, size: tuple[int, int], settings: Settings, work: Path) -> dict[str, Any]:
    """Latency of every method for ``model`` at ``size`` (one interleaved run)."""
    torch.set_num_threads(settings.threads)
    files = ModelFiles(model, work)
    calls = {name: ort_call(files.file(name), settings, size) for name in ("plain", "one", "ten")}
    device = torch.device(settings.torch_device)
    x = torch.randn(1, 3, *size, device=device)
    net = build_module(model).to(device)  # one instance per method: the hooks stay apart
    calls["torch_plain"] = torch_call(lambda t: main_output(net(t)), x)
    for variant in ("one", "ten"):
        calls[f"torch_{variant}"] = torch_call(EagerPGN(build_module(model).to(device), VARIANTS[variant]), x)
    notes = []
    mc = {}
    if model in SPLITS:
        mc["split_max_abs_diff"] = check_split(model)
        for optimized in (False, True):
            name = f"mc{SAMPLES}_{'optimized' if optimized else 'naive'}"
            calls[name] = ort_call(mc_file(model, optimized, work), settings, size)
    else:
        notes.append(f"{model} has no dropout layer: MC dropout does not apply")
    log(f"methods: {model} {size[0]}x{size[1]}: {', '.join(calls)}")
    timed = interleave(calls, settings)
    return {"model": model, "size": list(size), "notes": notes, "mc": mc, **summarize(timed)}
