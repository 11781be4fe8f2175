"""pgn-deploy: segmentation plus Pixel-wise Gradient Norm (PGN) uncertainty in one forward pass.

The face of the package. ``import pgn_deploy`` needs only the core dependencies (numpy, onnx,
onnxruntime, opencv); every name below is imported on first use, so the exporter (PyTorch) and
the runtime backends load only when asked for:

>>> import pgn_deploy
>>> pgn_deploy.export_model("model.pth", "model.pgn.onnx", pgn_deploy.PGNSpec(p=(0.5,)))
>>> with pgn_deploy.Runtime("model.pgn.onnx") as runtime:
...     result = runtime.run(image)     # Result: pred, scores{name: H x W float32}
"""
from __future__ import annotations

import importlib
from typing import Any

from pgn_deploy._version import __version__

_CONTRACT = "pgn_deploy.contract"
_LAZY = {
    "Runtime": ("pgn_deploy.runtime.runner", "Runtime"),
    "Result": ("pgn_deploy.runtime.result", "Result"),
    "Instance": ("pgn_deploy.runtime.result", "Instance"),
    "export_model": ("pgn_deploy.export.api", "export_model"),
    "graft": ("pgn_deploy.graft.attach", "graft"),
    "PGNSpec": (_CONTRACT, "PGNSpec"),
    "make_spec": (_CONTRACT, "make_spec"),
    "Metadata": (_CONTRACT, "Metadata"),
    "read_metadata": (_CONTRACT, "read_metadata"),
    "pgn_output_name": (_CONTRACT, "pgn_output_name"),
    "PGNError": (_CONTRACT, "PGNError"),
    "BadInputError": (_CONTRACT, "BadInputError"),
    "ModelLoadError": (_CONTRACT, "ModelLoadError"),
    "UnsupportedModelError": (_CONTRACT, "UnsupportedModelError"),
    "MissingMetadataError": (_CONTRACT, "MissingMetadataError"),
    "BackendUnavailableError": (_CONTRACT, "BackendUnavailableError"),
    "ArtifactExistsError": (_CONTRACT, "ArtifactExistsError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pgn_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
