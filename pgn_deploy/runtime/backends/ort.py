"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt``.

One :class:`OrtBackend` class; the three differ only in the execution providers they ask for.
ONNX Runtime silently falls back to the CPU when a GPU provider cannot start, so each factory
checks the providers the session really got and raises :class:`BackendUnavailableError` naming
what is missing instead.
"""
from __future__ import annotations

from importlib import metadata as dist_metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from pgn_deploy.contract import BackendUnavailableError, BadInputError, ModelLoadError, PGNError, first_line
from pgn_deploy.runtime.backends.base import Backend, BackendOptions, BrokenInstallError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# ONNX Runtime's type strings for the input dtypes a segmentation model can have
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _installed(distribution: str) -> bool:
    try:
        dist_metadata.version(distribution)
    except dist_metadata.PackageNotFoundError:
        return False
    return True


def check_installation() -> None:
    """Refuse the broken state where both ``onnxruntime`` and ``onnxruntime-gpu`` are installed
    (they ship the same module and overwrite each other's files)."""
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        raise BrokenInstallError(
            "both onnxruntime and onnxruntime-gpu are installed; they provide the same module and "
            "break each other. Fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu (or onnxruntime for CPU only)"
        )


class OrtBackend(Backend):
    """An ``onnxruntime.InferenceSession`` with the given execution providers.

    With ``binding_device`` (``"cpu"`` or ``"cuda"``) every run binds the inputs from host
    memory and lets ONNX Runtime allocate the requested outputs on that device (one copy in,
    one copy out of only the requested outputs); without it, ``session.run``. A fresh IO binding
    per call keeps :meth:`run` thread-safe (``InferenceSession.run`` is).
    """

    def __init__(self, path: Path, name: str, providers: list[str], options: BackendOptions,
                 binding_device: str | None) -> None:
        check_installation()
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.log_severity_level = 3  # errors only: fallbacks are reported by us
        if options.basic_optimization:
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        provider_options = [{"device_id": options.device_id} if p != CPU else {} for p in providers]
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options, providers=providers,
                provider_options=provider_options,
            )
        except Exception as exc:  # onnxruntime raises its own pybind exception kinds
            raise ModelLoadError(f"{path}: ONNX Runtime cannot load the model ({first_line(exc)})") from None
        active = self.session.get_providers()
        if active[0] != providers[0]:
            raise BackendUnavailableError(
                f"{name}: ONNX Runtime could not start {providers[0]} (no usable GPU, or its CUDA/"
                f"cuDNN/TensorRT libraries are missing); it fell back to {active[0]}"
            )
        self.name = name
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtypes = {i.name: np.dtype(_ORT_DTYPES.get(i.type, np.float32)) for i in inputs}
        self.dynamic_batch = all(not isinstance(i.shape[0], int) for i in inputs if i.shape)
        self._binding_device = binding_device
        self._device_id = options.device_id

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees its memory and threads with the last reference)."""
        self.session = None

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """Run once on host arrays ``feeds``; returns ``{name: host array}`` for ``output_names``.

        Raises BadInputError when ONNX Runtime refuses the input (shape, dtype), PGNError on any other failure.
        """
        try:
            if self._binding_device is None:
                return dict(zip(output_names, self.session.run(output_names, feeds)))
            binding = self.session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in output_names:
                binding.bind_output(name, self._binding_device, self._device_id)
            self.session.run_with_iobinding(binding)
            return dict(zip(output_names, binding.copy_outputs_to_cpu()))
        except InvalidArgument as exc:
            raise BadInputError(f"the model refused the input: {first_line(exc)}") from None
        except Exception as exc:
            raise PGNError(f"{self.name}: inference failed: {first_line(exc)}") from None




def _require_gpu_provider(provider: str, backend: str) -> None:
    check_installation()
    if provider not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"{backend} needs onnxruntime-gpu in place of onnxruntime (the installed one has no {provider})"
        )


def _binding(options: BackendOptions, default_device: str | None, device: str) -> str | None:
    use = options.io_binding if options.io_binding is not None else default_device is not None
    return device if use else None


def open_cpu(path: Path, options: BackendOptions) -> OrtBackend:
    """``ort-cpu``: ONNX Runtime on the CPU (IO binding only when ``options.io_binding``)."""
    return OrtBackend(path, "ort-cpu", [CPU], options, _binding(options, None, "cpu"))


def open_cuda(path: Path, options: BackendOptions) -> OrtBackend:
    """``ort-cuda``: ONNX Runtime's CUDA execution provider, outputs bound on the GPU."""
    _require_gpu_provider(CUDA, "ort-cuda")
    return OrtBackend(path, "ort-cuda", [CUDA, CPU], options, _binding(options, "cuda", "cuda"))


def open_tensorrt(path: Path, options: BackendOptions) -> OrtBackend:
    """``ort-trt``: ONNX Runtime's TensorRT execution provider (CUDA then CPU for the rest).

    ONNX Runtime builds the TensorRT engine when the session is created: the first load of a
    large model takes minutes.
    """
    _require_gpu_provider(TENSORRT, "ort-trt")
    return OrtBackend(path, "ort-trt", [TENSORRT, CUDA, CPU], options, _binding(options, "cuda", "cuda"))
