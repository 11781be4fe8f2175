"""``Runtime``: serve a grafted model (segmentation + PGN maps) on any backend.

The runtime reads only the model's ``pgn_deploy`` metadata (input name, layout, normalization,
output list, classes, calibration); it imports neither torch nor the exporter.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, overload

import numpy as np

from pgn_deploy.contract import (
    BadInputError,
    MissingMetadataError,
    ModelLoadError,
    PGNError,
    UnsupportedModelError,
)
from pgn_deploy.runtime.backends.base import Backend, BackendOptions, open_backend
from pgn_deploy.runtime.model_file import load_model_metadata
from pgn_deploy.runtime.preprocess import check_color, check_size, group_by_size, split_inputs, timed_preprocess
from pgn_deploy.runtime.result import Result, resize_labels, resize_score


class Runtime:
    """A grafted model loaded on one backend, ready to run on images.

    ``backend``: ``"auto"`` (the best available: a plan runs on ``trt``; an ONNX model on
    ``ort-trt``, ``ort-cuda`` or ``ort-cpu``, first that loads), or one name of
    :func:`pgn_deploy.runtime.backends.base.backend_names`. ``backend_name`` says which was taken and
    ``backend_notes`` why better ones were skipped. ``max_batch``: most images per backend call
    when the model has a dynamic batch (same-size images are batched; otherwise one call per
    image). :meth:`run` is safe to call from several threads.
    """

    def __init__(self, model_path: str | os.PathLike[str], backend: str = "auto", *,
                 intra_op_threads: int = 0, inter_op_threads: int = 0, device_id: int = 0,
                 io_binding: bool | None = None, max_batch: int = 8) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise BadInputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.model_path = Path(model_path)
        self.metadata = load_model_metadata(self.model_path)
        if not self.metadata.score_outputs:
            raise MissingMetadataError(f"{self.model_path}: the metadata lists no score maps; re-run pgn-export")
        options = BackendOptions(intra_op_threads, inter_op_threads, device_id, io_binding,
                                 basic_optimization=self.metadata.precision == "fp8")
        self._backend, self.backend_notes = open_backend(self.model_path, backend, options)
        self.max_batch = max_batch
        self._closed = False
        self._check_model()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the backend (session, device buffers); calls after this raise a PGNError. Idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ facts
    @property
    def backend(self) -> Backend:
        """The loaded backend (its ``run`` takes model-ready tensors); a PGNError once closed."""
        if self._closed:
            raise PGNError(f"{self.model_path}: the runtime is closed")
        return self._backend

    @property
    def backend_name(self) -> str:
        """The backend that runs the model (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``trt``)."""
        return self._backend.name

    @property
    def score_names(self) -> list[str]:
        """Every score map the model returns: the PGN maps, then the baselines."""
        return self.metadata.score_outputs

    @property
    def default_score(self) -> str:
        """The map that masks, instances and heatmaps use unless told otherwise."""
        return (self.metadata.pgn_outputs or self.metadata.score_outputs)[0]

    @property
    def extra_inputs(self) -> list[str]:
        """Graph inputs besides the image (e.g. the ``gt`` label map) that ``extra_feeds`` must give
        (the optional ``ood_threshold`` input, which has a default, is not one of them)."""
        optional = {self.metadata.ood_mask["threshold_input"]} if self.metadata.ood_mask else set()
        return [name for name in self._backend.input_names if name != self.metadata.input.name and name not in optional]

    def __repr__(self) -> str:
        return f"Runtime({str(self.model_path)!r}, backend={self.backend_name!r})"

    def _check_model(self) -> None:
        meta, backend = self.metadata, self._backend
        if meta.input.layout != ("NHWC" if meta.input.uint8 else "NCHW"):
            raise UnsupportedModelError(
                f"{self.model_path}: input layout {meta.input.layout!r} with format {meta.input.format!r}; "
                "the runtime feeds float NCHW tensors or uint8 NHWC frames"
            )
        if meta.input.name not in backend.input_names:
            raise ModelLoadError(
                f"{self.model_path}: the metadata names input {meta.input.name!r}, the model has "
                f"{', '.join(backend.input_names)}"
            )
        needed = [*meta.score_outputs, meta.pred or meta.head.logits_output]
        missing = [name for name in needed if name not in backend.output_names]
        if missing:
            raise ModelLoadError(
                f"{self.model_path}: the metadata lists outputs the model lacks: {', '.join(missing)}"
            )

    # ------------------------------------------------------------------ running
    @overload
    def run(self, inputs: np.ndarray, *, color: str = ..., logits: bool = ...,
            extra_feeds: dict[str, np.ndarray] | None = ...) -> Result | list[Result]: ...

    @overload
    def run(self, inputs: list[np.ndarray], *, color: str = ..., logits: bool = ...,
            extra_feeds: dict[str, np.ndarray] | None = ...) -> list[Result]: ...

    def run(self, inputs: Any, *, color: str = "RGB", logits: bool = False,
            extra_feeds: dict[str, np.ndarray] | None = None) -> Result | list[Result]:
        """Run the model; results are at each input's own size.

        ``inputs``: one uint8 H x W x 3 image (returns one :class:`Result`), a list of such
        images of any sizes, or a float N x 3 x H x W batch already preprocessed (both return a
        list; a model with a uint8 input format takes images only, fed as they are apart from
        the channel order and the metadata's resize). ``color``: channel order of uint8 images
        (``"RGB"`` or ``"BGR"``).
        ``logits``: also return the logits. ``extra_feeds``: arrays for the graph's other
        inputs (:attr:`extra_inputs`), only with a preprocessed batch.
        """
        check_color(color)
        if logits and self.metadata.head.logits_output in self.metadata.dropped_outputs:
            raise BadInputError(f"{self.model_path} was exported without its logits (--outputs); logits=True "
                                "needs a model that keeps them")
        images, batch, single = split_inputs(inputs)
        feeds = self._check_extra_feeds(extra_feeds, batch)
        fetch = self._fetch(logits)
        if batch is not None:
            return self._run_batch(batch, feeds, fetch, logits)
        results = self._run_images(images, color, fetch, logits)
        return results[0] if single else results

    def _fetch(self, logits: bool) -> list[str]:
        meta = self.metadata
        fetch = list(meta.score_outputs)
        if meta.pred:
            fetch.append(meta.pred)
        if logits or not meta.pred:
            fetch.append(meta.head.logits_output)
        return fetch

    def _check_extra_feeds(self, extra_feeds: dict[str, np.ndarray] | None,
                           batch: np.ndarray | None) -> dict[str, np.ndarray]:
        given = dict(extra_feeds or {})
        unknown = sorted(set(given) - set(self.extra_inputs))
        if unknown:
            raise BadInputError(f"extra_feeds names inputs the model does not have: {', '.join(unknown)}")
        missing = [name for name in self.extra_inputs if name not in given]
        if missing:
            raise BadInputError(f"the model also needs the inputs {', '.join(missing)}: pass them in extra_feeds")
        if given and batch is None:
            raise BadInputError("extra_feeds need a preprocessed N x 3 x H x W batch as input")
        for name, value in given.items():
            if not isinstance(value, np.ndarray) or value.shape[:1] != batch.shape[:1]:
                raise BadInputError(f"extra feed {name!r} must be an array with the batch's N = {batch.shape[0]} first")
        return given

    def _infer(self, tensor: np.ndarray, feeds: dict[str, np.ndarray],
               fetch: list[str]) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        outputs = self.backend.run({self.metadata.input.name: tensor, **feeds}, fetch)
        return outputs, (time.perf_counter() - start) * 1e3

    def _run_images(self, images: list[np.ndarray], color: str, fetch: list[str], logits: bool) -> list[Result]:
        dtype = self._backend.input_dtypes.get(self.metadata.input.name, np.dtype(np.float32))
        prepared = timed_preprocess(images, color, self.metadata.input, dtype)
        limit = self.max_batch if self._backend.dynamic_batch else 1
        results: list[Result | None] = [None] * len(images)
        for group in group_by_size([tensor.shape for tensor, _ in prepared], limit):
            tensor = np.stack([prepared[i][0] for i in group])
            outputs, ms = self._infer(tensor, {}, fetch)
            for row, i in enumerate(group):
                timings = {"preprocess_ms": prepared[i][1], "inference_ms": ms / len(group)}
                results[i] = self._postprocess(outputs, row, images[i].shape[:2], logits, timings)
        return results  # type: ignore[return-value]

    def _run_batch(self, batch: np.ndarray, feeds: dict[str, np.ndarray], fetch: list[str],
                   logits: bool) -> list[Result]:
        start = time.perf_counter()
        if self.metadata.input.uint8:
            raise BadInputError(f"{self.model_path} takes uint8 frames ({self.metadata.input.format}); pass "
                                "H x W x 3 images, not a preprocessed batch")
        check_size(self.metadata.input, batch.shape[2:], "the batch")
        dtype = self._backend.input_dtypes.get(self.metadata.input.name, np.dtype(np.float32))
        batch = np.ascontiguousarray(batch, dtype=dtype)
        count = batch.shape[0]
        prepare_ms = (time.perf_counter() - start) * 1e3 / count
        step = count if self._backend.dynamic_batch else 1
        results = []
        for first in range(0, count, step):
            part = slice(first, first + step)
            outputs, ms = self._infer(batch[part], {k: v[part] for k, v in feeds.items()}, fetch)
            timings = {"preprocess_ms": prepare_ms, "inference_ms": ms / step}
            results += [self._postprocess(outputs, row, batch.shape[2:], logits, timings) for row in range(step)]
        return results

    def _postprocess(self, outputs: dict[str, np.ndarray], row: int, size: tuple[int, int],
                     logits: bool, timings: dict[str, float]) -> Result:
        start = time.perf_counter()
        meta = self.metadata
        scores = {name: resize_score(_plane(outputs[name], row, name), size) for name in meta.score_outputs}
        logits_map = outputs[meta.head.logits_output][row] if meta.head.logits_output in outputs else None
        if meta.pred:
            pred = resize_labels(_plane(outputs[meta.pred], row, meta.pred), size)
        else:
            pred = resize_labels(np.argmax(logits_map, axis=0), size)
        timings = {**timings, "postprocess_ms": (time.perf_counter() - start) * 1e3}
        return Result(pred=pred, scores=scores, timings=timings, default_score=self.default_score,
                      calibration=meta.calibration, logits=logits_map if logits else None)


def _plane(output: np.ndarray, row: int, name: str) -> np.ndarray:
    """Row ``row`` of an N x 1 x h x w (or N x h x w) output as an h x w array."""
    if output.ndim == 4 and output.shape[1] == 1:
        return output[row, 0]
    if output.ndim == 3:
        return output[row]
    raise PGNError(f"output {name!r} has shape {output.shape}; expected N x 1 x H x W or N x H x W")
