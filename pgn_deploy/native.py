"""The C++ runtime (``cpp_bindings/``) from Python: :class:`Runtime` with the Python runtime's API.

Optional: the compiled module ``pgn_deploy._native`` exists only after ``make cpp``. Importing
this module always works; using it without the build raises
:class:`~pgn_deploy.contract.BackendUnavailableError` saying so.

>>> from pgn_deploy import native
>>> runtime = native.Runtime("model.pgn.onnx")            # backend="auto"
>>> result = runtime.run(image)                           # uint8 H x W x 3, RGB
>>> result.pred, result.scores["pgn_uni_p0.5"], result.instances(threshold=2.0)

The caller's arrays are checked by the Python runtime's own functions (same errors, same
messages); pre-processing, inference and post-processing (``ood_mask``, ``instances``) run in
C++. Differences from :class:`pgn_deploy.Runtime`: no preprocessed float batch, no
``extra_feeds``, no ``io_binding`` option, and ``logits`` come back as float32.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from pgn_deploy.contract import BackendUnavailableError, BadInputError
from pgn_deploy.runtime.preprocess import check_color, split_inputs

_IMPORT_ERROR: str | None = None
try:
    from pgn_deploy import _native
except ImportError as exc:  # not built (make cpp), or its ONNX Runtime library is gone
    _native = None
    _IMPORT_ERROR = str(exc)


def available() -> bool:
    """Whether the compiled C++ runtime can be used."""
    return _native is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is false (``None`` when it is true)."""
    return _IMPORT_ERROR if _native is None else None


def _module() -> Any:
    if _native is None:
        raise BackendUnavailableError(
            f"the native C++ runtime pgn_deploy._native is not built ({_IMPORT_ERROR}); "
            "build it with: make cpp"
        )
    return _native


def parse_metadata(text: str) -> dict[str, Any]:
    """Parse ``pgn_deploy`` metadata JSON with the C++ reader; returns the dict
    :meth:`pgn_deploy.contract.Metadata.to_json` would give (calibration numbers as floats)."""
    return _module().parse_metadata(text)


class Runtime:
    """A grafted model on a C++ backend; the counterpart of :class:`pgn_deploy.Runtime`.

    ``backend``: ``"auto"``, ``ort-cpu``, ``ort-cuda``, ``ort-trt`` or ``trt`` (the last only
    in a build with TensorRT). :meth:`run` is thread-safe and releases the GIL.
    """

    def __init__(self, model_path: str | os.PathLike[str], backend: str = "auto", *,
                 intra_op_threads: int = 0, inter_op_threads: int = 0, device_id: int = 0,
                 max_batch: int = 8) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise BadInputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self._runtime = _module().Runtime(os.fspath(model_path), backend, intra_op_threads,
                                          inter_op_threads, device_id, max_batch)

    @property
    def model_path(self) -> str:
        """The model file's path, as a string."""
        return self._runtime.model_path

    @property
    def backend_name(self) -> str:
        """The backend that runs the model (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``trt``)."""
        return self._runtime.backend_name

    @property
    def backend_notes(self) -> list[str]:
        """Why better ``auto`` candidates were skipped."""
        return self._runtime.backend_notes

    @property
    def score_names(self) -> list[str]:
        """Every score map the model returns: the PGN maps, then the baselines."""
        return self._runtime.score_names

    @property
    def default_score(self) -> str:
        """The map masks and instances use unless told otherwise (the first PGN map)."""
        return self._runtime.default_score

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's metadata as read by the C++ library, as ``Metadata.to_json()``'s dict."""
        return self._runtime.metadata

    def __repr__(self) -> str:
        return f"native.Runtime({self.model_path!r}, backend={self.backend_name!r})"

    def run(self, inputs: Any, *, color: str = "RGB", logits: bool = False) -> Any:
        """One uint8 H x W x 3 image -> one C++ ``Result``; a list of images -> a list.

        The ``Result`` has the Python one's attributes and methods (``pred``, ``scores``,
        ``logits``, ``timings``, ``default_score``, ``size``, ``score()``, ``threshold()``,
        ``ood_mask()``, ``instances()``), computed in C++.
        """
        check_color(color)
        images, batch, single = split_inputs(inputs)
        if batch is not None:
            raise BadInputError(
                "the native runtime takes uint8 H x W x 3 images; run a preprocessed N x 3 x H x W "
                "batch with pgn_deploy.Runtime"
            )
        arrays = [np.ascontiguousarray(image) for image in images]
        if single:
            return self._runtime.run_image(arrays[0], color, logits)
        return self._runtime.run_images(arrays, color, logits)
