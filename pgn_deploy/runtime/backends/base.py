"""One small interface over the inference backends, in the style of Polygraphy's runners.

A :class:`Backend` owns one loaded model (an ONNX Runtime session, a TensorRT engine) and runs
it on host arrays. Backends are created by name through a registry so that optional ones are
imported only when asked for:

========== ===========================================================================
name       what runs the model
========== ===========================================================================
ort-cpu    ONNX Runtime, CPU execution provider (the embedded default)
ort-cuda   ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu and a GPU)
ort-trt    ONNX Runtime, TensorRT execution provider (onnxruntime-gpu, TensorRT, a GPU)
trt        a native TensorRT plan (``.plan`` / ``.engine``), from ``pgn_deploy.engines``
========== ===========================================================================

``auto`` tries, for a plan file, ``trt``; for an ONNX file ``ort-trt``, ``ort-cuda`` and
``ort-cpu`` in that order, keeping the first that loads (see :func:`open_backend`).
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pgn_deploy.contract import BackendUnavailableError, BadInputError

PLAN_SUFFIXES = (".plan", ".engine")
AUTO_ORDER_ONNX = ("ort-trt", "ort-cuda", "ort-cpu")
AUTO_ORDER_PLAN = ("trt",)


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Settings every backend receives (a backend ignores those that do not apply to it).

    ``intra_op_threads`` / ``inter_op_threads``: CPU thread pools (0: the library's default);
    ``device_id``: the GPU to use; ``io_binding``: bind inputs and outputs explicitly
    (``None``: on for GPU backends, off on the CPU where a plain run copies nothing);
    ``basic_optimization``: ONNX Runtime graph optimizations at ``ORT_ENABLE_BASIC`` only (its
    extended CPU fusions mis-compute FP8 Q/DQ models; :class:`~pgn_deploy.runtime.runner.Runtime`
    sets it for ``fp8`` models).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    device_id: int = 0
    io_binding: bool | None = None
    basic_optimization: bool = False

    def __post_init__(self) -> None:
        for field in ("intra_op_threads", "inter_op_threads", "device_id"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise BadInputError(f"{field} must be an integer >= 0, got {value!r}")


class BrokenInstallError(BackendUnavailableError):
    """The installation itself is broken (e.g. two conflicting packages): ``auto`` stops at
    this error instead of trying the next backend."""


class Backend(abc.ABC):
    """A loaded model that maps named host arrays to named host arrays.

    Attributes every backend sets: ``name`` (its registry name), ``input_names``,
    ``output_names``, ``dynamic_batch`` (the batch dimension of the inputs is not fixed), and
    ``input_dtypes`` (numpy dtype per input). :meth:`run` must be safe to call from several
    threads at once: keep per-call state local.
    """

    name: str
    input_names: list[str]
    output_names: list[str]
    dynamic_batch: bool
    input_dtypes: dict[str, np.dtype]

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """Run the model once on ``feeds`` (host arrays) and return the requested outputs."""

    def close(self) -> None:
        """Release what the backend holds (sessions, device memory); it is unusable afterwards.

        The default releases nothing: a backend whose resources Python's garbage collector frees
        in time (an ONNX Runtime session) need not override it.
        """


BackendFactory = Callable[[Path, BackendOptions], Backend]

# name -> factory, or "module:attribute" of a factory imported on first use
_REGISTRY: dict[str, BackendFactory | str] = {
    "ort-cpu": "pgn_deploy.runtime.backends.ort:open_cpu",
    "ort-cuda": "pgn_deploy.runtime.backends.ort:open_cuda",
    "ort-trt": "pgn_deploy.runtime.backends.ort:open_tensorrt",
    "trt": "pgn_deploy.runtime.backends.trt:open_backend",
}


def register_backend(name: str, factory: BackendFactory | str) -> None:
    """Add (or replace) a backend: ``factory(model_path, options) -> Backend`` or its
    ``"module:attribute"`` path."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """Every registered backend name (available or not)."""
    return list(_REGISTRY)


def is_plan(path: Path) -> bool:
    """Whether ``path`` is a native TensorRT plan (by its suffix)."""
    return path.suffix.lower() in PLAN_SUFFIXES


def _factory(name: str) -> BackendFactory:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise BadInputError(f"unknown backend {name!r}; choose from auto, {', '.join(_REGISTRY)}")
    if not isinstance(entry, str):
        return entry
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BackendUnavailableError(
                f"backend {name!r} is not part of this installation (no module {module_name})"
            ) from None
        raise
    return getattr(module, attr)


def open_backend(path: Path, name: str = "auto", options: BackendOptions | None = None) -> tuple[Backend, list[str]]:
    """Load the model at ``path`` with backend ``name`` (or ``auto``).

    Returns the backend and notes saying why better ``auto`` candidates were skipped (empty for
    an explicit name). A plan file runs only on ``trt``; an ONNX file never on ``trt``. An
    unavailable backend raises :class:`BackendUnavailableError` naming what is missing.
    """
    options = options or BackendOptions()
    plan = is_plan(path)
    if name != "auto":
        if plan != (name == "trt") and name in _REGISTRY:
            kind = "a TensorRT plan" if plan else "an ONNX model"
            fit = "trt" if plan else "an ort-* backend"
            raise BadInputError(f"{path} is {kind}: backend {name!r} cannot run it; use {fit} or auto")
        return _factory(name)(path, options), []
    notes: list[str] = []
    order = AUTO_ORDER_PLAN if plan else AUTO_ORDER_ONNX
    for candidate in order:
        try:
            return _factory(candidate)(path, options), notes
        except BrokenInstallError:
            raise
        except BackendUnavailableError as exc:
            notes.append(str(exc))
    raise BackendUnavailableError("no backend can run " + str(path) + ": " + "; ".join(notes))
