"""pgn-deploy: segmentation plus Pixel-wise Gradient Norm (PGN) uncertainty in one forward pass.

``import pgn_deploy`` needs only the core dependencies (numpy, onnx, onnxruntime, opencv);
the exporter (PyTorch) and the runtime backends are imported on first use.
"""
from __future__ import annotations

from typing import Any

from pgn_deploy.contract import (
    BackendUnavailableError,
    BadInputError,
    Metadata,
    PGNError,
    PGNSpec,
    UnsupportedModelError,
    pgn_output_name,
    read_metadata,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "BadInputError",
    "Metadata",
    "PGNError",
    "PGNSpec",
    "Runtime",
    "UnsupportedModelError",
    "export_model",
    "pgn_output_name",
    "read_metadata",
]

_LAZY = {
    "export_model": ("pgn_deploy.export.api", "export_model"),
    "Runtime": ("pgn_deploy.runtime", "Runtime"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pgn_deploy' has no attribute {name!r}")
