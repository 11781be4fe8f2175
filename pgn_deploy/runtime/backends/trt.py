"""The ``trt`` backend of :class:`pgn_deploy.runtime.Runtime`: a TensorRT plan plus its sidecar.

Loading refuses, with one line naming both sides, a plan built by another TensorRT release or
for another GPU architecture (:func:`~pgn_deploy.runtime.backends.plan_sidecar.check_plan_compatible`),
before TensorRT sees its bytes. Running uses the tensor-address API of TensorRT 10 and 11:
``set_input_shape`` for every input (dynamic shapes within the plan's profile),
``set_tensor_address`` for every input and output, ``execute_async_v3`` on a CUDA stream.
Device buffers are kept between calls and grow when a larger shape arrives; one lock makes
:meth:`TrtBackend.run` safe to call from several threads (an execution context is not).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, ModelLoadError, PGNError
from pgn_deploy.runtime.backends.base import Backend, BackendOptions
from pgn_deploy.runtime.backends.cuda import CudaStream, DeviceBuffer, current_gpu
from pgn_deploy.runtime.backends.plan_sidecar import PlanSidecar, check_plan_compatible, read_sidecar, tensorrt_module


def load_engine(path: Path, device_id: int = 0) -> tuple[Any, Any, PlanSidecar]:
    """``(tensorrt module, ICudaEngine, sidecar)`` of the plan at ``path``, after the checks."""
    sidecar = read_sidecar(path)
    trt = tensorrt_module("running a TensorRT plan")
    check_plan_compatible(sidecar, trt.__version__, current_gpu(device_id), path)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ModelLoadError(f"{path}: TensorRT cannot deserialize the plan (truncated or corrupt?)")
    return trt, engine, sidecar


class TrtBackend(Backend):
    """A deserialized TensorRT engine with one execution context, stream and buffer set."""

    def __init__(self, path: Path, options: BackendOptions) -> None:
        trt, self.engine, self.sidecar = load_engine(path, options.device_id)
        self.name = "trt"
        self.path = path
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: self._numpy_dtype(trt, n) for n in names}
        self.input_dtypes = {n: self._dtypes[n] for n in self.input_names}
        self.dynamic_batch = all(self.engine.get_tensor_shape(n)[0] == -1 for n in self.input_names)
        self._context = self.engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = CudaStream()
        self._buffers = {n: DeviceBuffer() for n in names}
        self._lock = threading.Lock()

    def _numpy_dtype(self, trt: Any, name: str) -> np.dtype:
        try:
            return np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        except TypeError:
            raise ModelLoadError(
                f"{self.path}: tensor {name!r} has type {self.engine.get_tensor_dtype(name)}, which "
                f"numpy cannot hold; export with float32 inputs and outputs"
            ) from None

    def _profile_text(self, name: str) -> str:
        shapes = self.sidecar.profiles.get(name)
        if not shapes:
            return ""
        fmt = "x".join
        return (f" (the plan's profile: min {fmt(map(str, shapes['min']))}, max "
                f"{fmt(map(str, shapes['max']))}; rebuild with pgn-build --shapes to change it)")

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """Run once on host arrays ``feeds``; returns ``{name: host array}`` for ``output_names``.

        Raises BadInputError for an unknown output, a missing input or a shape outside the plan's profile,
        PGNError for a data-dependent output shape or a failed execution. Calls are serialized by a lock.
        """
        unknown = sorted(set(output_names) - set(self.output_names))
        if unknown:
            raise BadInputError(f"the plan has no outputs {', '.join(unknown)}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise BadInputError(f"the plan needs the inputs {', '.join(missing)}")
        with self._lock:
            for name in self.input_names:
                array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                if not self._context.set_input_shape(name, tuple(array.shape)):
                    raise BadInputError(
                        f"input {name!r} of shape {'x'.join(map(str, array.shape))} is outside what "
                        f"the plan accepts{self._profile_text(name)}"
                    )
                self._buffers[name].upload(array, self._stream)
                self._context.set_tensor_address(name, self._buffers[name].ptr)
            hosts = {}
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise PGNError(f"output {name!r} has a data-dependent shape {shape}, "
                                   "which the trt backend does not support")
                host = np.empty(shape, dtype=self._dtypes[name])
                self._context.set_tensor_address(name, self._buffers[name].reserve(host.nbytes))
                hosts[name] = host
            if not self._context.execute_async_v3(self._stream.handle):
                raise PGNError(f"trt: inference failed on {self.path} (see TensorRT's log above)")
            for name in output_names:
                self._buffers[name].download(hosts[name], self._stream)
            self._stream.synchronize()
        return {name: hosts[name] for name in output_names}

    def close(self) -> None:
        """Free the device buffers and the stream (the backend is unusable afterwards)."""
        with self._lock:
            for buffer in self._buffers.values():
                buffer.close()
            self._stream.close()


def open_backend(path: Path, options: BackendOptions) -> TrtBackend:
    """Registry factory of the ``trt`` backend."""
    return TrtBackend(Path(path), options)
