"""The little CUDA the TensorRT path needs, through cuda-python (``cuda.bindings.runtime``).

:func:`current_gpu` names the device a plan is built for or run on; :class:`DeviceBuffer` and
:class:`CudaStream` hold the device memory and the stream of an execution context. Every CUDA
error becomes a :class:`~pgn_deploy.contract.BackendUnavailableError` with CUDA's own message.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pgn_deploy.contract import BackendUnavailableError, require
from pgn_deploy.runtime.backends.plan_sidecar import GpuInfo


def cudart() -> Any:
    """The cuda-python runtime module (``pip install 'pgn-deploy[trt]'`` provides it)."""
    return require("cuda.bindings.runtime", "TensorRT on a GPU")


def _check(result: tuple[Any, ...], what: str) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple; raise on an error."""
    rt = cudart()
    error, *values = result
    if error != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(error)
        raise BackendUnavailableError(f"CUDA {what} failed: {text.decode(errors='replace')}")
    return values[0] if len(values) == 1 else tuple(values)


def current_gpu(device_id: int | None = None) -> GpuInfo:
    """Name and compute capability of the current CUDA device (first made ``device_id``, if
    given); no usable GPU raises a PGNError."""
    rt = cudart()
    error, count = rt.cudaGetDeviceCount()
    if error != rt.cudaError_t.cudaSuccess:
        reason = rt.cudaGetErrorString(error)[1].decode(errors="replace")
    elif count == 0:
        reason = "no CUDA device found"
    else:
        reason = ""
    if reason:
        raise BackendUnavailableError(f"TensorRT needs a CUDA GPU and none is usable here ({reason})")
    if device_id is not None:
        if not 0 <= device_id < count:
            raise BackendUnavailableError(f"there is no CUDA device {device_id} (this host has {count})")
        _check(rt.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
    device = _check(rt.cudaGetDevice(), "cudaGetDevice")
    prop = _check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = bytes(prop.name).split(b"\0", 1)[0].decode(errors="replace").strip()
    return GpuInfo(name=name, compute_capability=f"{prop.major}.{prop.minor}")


class CudaStream:
    """A CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = _check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        """The stream as an integer (``cudaStream_t``), what ``execute_async_v3`` takes."""
        return int(self._stream)

    def synchronize(self) -> None:
        """Block until everything queued on the stream has finished; raises BackendUnavailableError on a CUDA error."""
        _check(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream; a no-op when it is already closed."""
        if self._stream is not None:
            _check(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class DeviceBuffer:
    """Device memory that grows on demand; ``ptr`` is its address (0 while empty)."""

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        """Make room for ``nbytes`` (reallocating only to grow); returns the address."""
        if nbytes > self.nbytes:
            self.close()
            self.ptr = int(_check(cudart().cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def upload(self, array: np.ndarray, stream: CudaStream) -> None:
        """Copy a C-contiguous host array into the buffer (asynchronously on ``stream``)."""
        array = np.ascontiguousarray(array)
        self.reserve(array.nbytes)
        rt = cudart()
        _check(rt.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
               "cudaMemcpyAsync")

    def download(self, array: np.ndarray, stream: CudaStream) -> None:
        """Copy the first ``array.nbytes`` bytes into the C-contiguous host ``array``."""
        rt = cudart()
        _check(rt.cudaMemcpyAsync(array.ctypes.data, self.ptr, array.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
               "cudaMemcpyAsync")

    def close(self) -> None:
        """Free the device memory, if any; ``ptr`` and ``nbytes`` become 0 (the buffer can grow again)."""
        if self.ptr:
            _check(cudart().cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0
