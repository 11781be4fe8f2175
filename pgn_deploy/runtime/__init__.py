"""Serve a grafted model: segmentation + PGN maps from one forward pass, without PyTorch.

>>> from pgn_deploy.runtime import Runtime
>>> runtime = Runtime("model.pgn.onnx")               # backend="auto"
>>> result = runtime.run(image)                        # uint8 H x W x 3, RGB
>>> result.pred, result.scores["pgn_uni_p0.5"], result.instances(threshold=2.0)

Imports only numpy, onnx, onnxruntime and OpenCV (TensorRT inside the ``trt`` backend).
"""
from __future__ import annotations

from pgn_deploy.runtime.backends.base import Backend, BackendOptions, backend_names, register_backend
from pgn_deploy.runtime.calibrate import calibrate
from pgn_deploy.runtime.result import Instance, Result
from pgn_deploy.runtime.runner import Runtime

__all__ = [
    "Backend",
    "BackendOptions",
    "Instance",
    "Result",
    "Runtime",
    "backend_names",
    "calibrate",
    "register_backend",
]
