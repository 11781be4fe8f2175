"""Where a served model keeps its ``pgn_deploy`` metadata, read and rewritten.

* ONNX file: the ``pgn_deploy`` entry of its ``metadata_props`` (:mod:`pgn_deploy.contract`).
* TensorRT plan (``.plan`` / ``.engine``): the ``metadata`` of its sidecar JSON
  ``<plan>.json`` (:mod:`pgn_deploy.runtime.backends.plan_sidecar`).
"""
from __future__ import annotations

import os
from pathlib import Path

from pgn_deploy.contract import (
    BadInputError,
    Metadata,
    ModelLoadError,
    atomic_write_text,
    load_onnx,
    read_metadata,
    save_onnx,
    write_metadata,
)
from pgn_deploy.runtime.backends.base import is_plan
from pgn_deploy.runtime.backends.plan_sidecar import read_sidecar, sidecar_path


def load_model_metadata(path: str | os.PathLike[str]) -> Metadata:
    """The metadata of an ONNX model or a TensorRT plan; a clear PGNError when absent."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    return read_sidecar(path).metadata if is_plan(path) else read_metadata(path)


def save_model_metadata(path: str | os.PathLike[str], meta: Metadata,
                        out: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Store ``meta`` with the model at ``path``, atomically.

    ``out=None`` rewrites ``path`` itself (an ONNX file) or its sidecar (a plan); otherwise an
    ONNX copy is written to ``out`` (refused if it exists, unless ``force``). Returns the file
    written.
    """
    path = Path(path)
    if is_plan(path):
        if out is not None:
            raise BadInputError(f"{path}: a TensorRT plan's metadata is updated in place; drop -o")
        sidecar = read_sidecar(path)
        sidecar.metadata = meta
        return atomic_write_text(sidecar_path(path), sidecar.dumps(), force=True)
    model = load_onnx(path)
    write_metadata(model, meta)
    if out is None:
        return save_onnx(model, path, force=True)
    return save_onnx(model, out, force=force)
