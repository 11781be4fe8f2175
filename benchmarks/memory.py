"""(e) Peak memory of each method, each measured in a fresh process.

A child process (``spawn``) imports what it needs, resets the kernel's RSS high-water mark
(:class:`pgn_deploy.benchmark.PeakMemory`), loads the model and runs it ``RUNS`` times; it
reports the peak RSS and its increase over the RSS before loading. Fresh processes keep the
methods' memory (ONNX Runtime arenas, PyTorch caches) from mixing.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

RUNS = 3


def _ort(path: str, shape: tuple[int, int], backend: str, threads: int) -> None:
    from pathlib import Path

    from benchmarks.common import Settings, ort_call

    call = ort_call(Path(path), Settings(backend=backend, threads=threads), shape)
    for _ in range(RUNS):
        call()


def _torch(model: str, shape: tuple[int, int], variant: str, threads: int) -> None:
    import torch

    from benchmarks.eager import EagerPGN, main_output, torch_call
    from benchmarks.models import VARIANTS, build_module

    torch.set_num_threads(threads)
    net = build_module(model)
    fn = (lambda x: main_output(net(x))) if variant == "plain" else EagerPGN(net, VARIANTS[variant])
    call = torch_call(fn, torch.randn(1, 3, *shape))
    for _ in range(RUNS):
        call()


def _backprop(model: str, crop: tuple[int, int], pixels: int, threads: int) -> None:
    import torch

    from benchmarks import backprop

    torch.set_num_threads(threads)
    backprop.run(model, crop, pixels)


PROBES = {"ort": _ort, "torch": _torch, "backprop": _backprop}


def _child(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime  # noqa: F401 -- imported before the reset: libraries are not the method's
    import torch  # noqa: F401

    from pgn_deploy.benchmark import PeakMemory

    memory = PeakMemory()
    memory.reset()
    PROBES[kind](**kwargs)
    peak = memory.peak_mb()
    return {"peak_rss_mb": peak, "baseline_rss_mb": memory.baseline_mb,
            "increase_mb": peak - memory.baseline_mb if memory.baseline_mb is not None else None,
            "source": memory.source}


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Peak memory of one probe (``ort``, ``torch`` or ``backprop``) in a fresh process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, kind, kwargs).result()
