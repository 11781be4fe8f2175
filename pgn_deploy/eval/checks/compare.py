"""Compare two builds of one grafted model (``pgn-check --against``).

Either side is an ONNX file (run by ONNX Runtime on the CPU: fp32 vs its fp16 copy runs
anywhere) or a TensorRT plan (Polygraphy's TensorRT runner, after the plan's sidecar passes
:func:`~pgn_deploy.runtime.backends.plan_sidecar.check_plan_compatible`; needs TensorRT and a GPU).
Two ONNX files are run by ONNX Runtime directly (a core install suffices); a plan goes through
Polygraphy's ``Comparator.run``. Both sides get the same inputs; :class:`ContractCompare`
checks every shared contract output against its own tolerance:

* ``pred``: the percentage of pixels with the same class (default >= 99.9 %);
* float maps (PGN maps, baselines, logits): the relative error ``max |a - b| / max |a|`` per
  image (default <= 1e-2). Errors are measured against the map's range rather than pixel by
  pixel because a map's near-zero pixels (common with random weights, and irrelevant to
  thresholded OoD decisions) make pointwise ratios of two tiny numbers meaningless; a
  thresholded decision moves by at most this fraction of the map's scale. The median
  pointwise relative error is reported alongside.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, Metadata, load_onnx, read_metadata

DEFAULT_PRED_AGREEMENT = 99.9
DEFAULT_RELATIVE_ERROR = 1e-2


@dataclasses.dataclass
class OutputComparison:
    """One output's worst value over the images against its tolerance.

    ``metric``: ``"agreement_%"`` (higher is better) or ``"relative_error"`` (lower is better).
    """

    name: str
    metric: str
    value: float
    tolerance: float
    passed: bool
    median_pointwise_error: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ComparisonReport:
    """Result of :func:`compare_models`."""

    model_a: str
    model_b: str
    runner_a: str
    runner_b: str
    images: int
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        """True when every output is within its tolerance."""
        return all(o.passed for o in self.outputs)

    def to_text(self) -> str:
        """What ``pgn-check --against`` prints: one row per output and the verdict."""
        lines = [f"{self.runner_a} vs {self.runner_b}: {self.images} input(s)"]
        for row in self.outputs:
            relation = ">=" if row.metric == "agreement_%" else "<="
            lines.append(f"  {row.name:24s} {row.metric:15s} {row.value:<10.4g} {relation} {row.tolerance:<8g} "
                         f"{'PASS' if row.passed else 'FAIL'}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Both models and runners, the image count, ``passed`` and one dict per output, as a JSON-ready dict."""
        return {"model_a": self.model_a, "model_b": self.model_b, "runner_a": self.runner_a,
                "runner_b": self.runner_b, "images": self.images, "passed": self.passed,
                "outputs": [o.to_json() for o in self.outputs]}


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """``max |a - b| / max |a|`` in float64 (0 for two all-zero maps; inf for a NaN/inf in b)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise BadInputError(f"shapes differ: {a.shape} vs {b.shape}")
    if not np.isfinite(b).all():
        return float("inf")
    scale = float(np.max(np.abs(a), initial=0.0))
    diff = float(np.max(np.abs(a - b), initial=0.0))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def pred_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Percentage of pixels with the same class id."""
    if reference.shape != other.shape:
        raise BadInputError(f"pred shapes differ: {reference.shape} vs {other.shape}")
    return 100.0 * float(np.mean(reference == other)) if reference.size else 100.0


class ContractCompare:
    """Per-output verdicts with per-output tolerances.

    Called once per input with both sides' outputs (mappings name -> array); records the
    metric values so the report can give the worst ones.
    """

    def __init__(self, meta: Metadata, outputs: list[str], pred_min: float, tolerances: Mapping[str, float]):
        self.meta = meta
        self.outputs = outputs
        self.pred_min = pred_min
        self.tolerances = tolerances
        self.values: dict[str, list[float]] = collections.defaultdict(list)
        self.pointwise: dict[str, list[float]] = collections.defaultdict(list)

    def __call__(self, result_a: Any, result_b: Any) -> collections.OrderedDict:
        """Compare one iteration: ``{output: within tolerance}``, pred by agreement % >= ``pred_min``, maps by
        relative error <= their tolerance; records the values (and maps' median pointwise error) for :meth:`summary`."""
        verdicts = collections.OrderedDict()
        for name in self.outputs:
            a, b = np.asarray(result_a[name]), np.asarray(result_b[name])
            if name == self.meta.pred:
                value = pred_agreement(a, b)
                verdicts[name] = value >= self.pred_min
            else:
                value = relative_error(a, b)
                verdicts[name] = value <= self.tolerances[name]
                pointwise = np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(a), np.finfo(np.float32).tiny)
                self.pointwise[name].append(float(np.median(pointwise)))
            self.values[name].append(value)
        return verdicts

    def summary(self) -> list[OutputComparison]:
        """One row per output: its worst recorded value (lowest agreement %, largest relative error, with the
        largest per-image median pointwise error) against its tolerance."""
        rows = []
        for name in self.outputs:
            if name == self.meta.pred:
                worst = min(self.values[name])
                rows.append(OutputComparison(name, "agreement_%", worst, self.pred_min, worst >= self.pred_min))
            else:
                worst = max(self.values[name])
                rows.append(OutputComparison(name, "relative_error", worst, self.tolerances[name],
                                             worst <= self.tolerances[name], max(self.pointwise[name])))
        return rows


def _is_plan(path: Path) -> bool:
    from pgn_deploy.runtime.backends.base import is_plan

    return is_plan(path)


def _side(path: Path) -> tuple[Metadata, list[str]]:
    """(metadata, output names) of one side."""
    if _is_plan(path):
        from pgn_deploy.runtime.backends.trt import load_engine

        trt, engine, sidecar = load_engine(path)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return sidecar.metadata, [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    model = load_onnx(path, load_weights=False)
    return read_metadata(model), [o.name for o in model.graph.output]


def _ort_results(path: Path, names: list[str], data: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The outputs ``names`` of the ONNX model at ``path`` on each feed of ``data`` (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    from pgn_deploy.contract import first_line

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        return [dict(zip(names, session.run(names, feed))) for feed in data]
    except Exception as exc:  # ORT raises its own exception types
        raise BadInputError(f"{path}: ONNX Runtime fails on the comparison inputs: {first_line(exc)}") from None


def _polygraphy_results(paths: list[Path], data: list[dict[str, np.ndarray]]) -> list[list[Any]]:
    """Per side, the outputs on each feed of ``data`` through Polygraphy (a plan needs its TensorRT runner)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import TrtRunner
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    from pgn_deploy.runtime.backends.trt import load_engine

    runners = []
    for path in paths:
        if _is_plan(path):
            runners.append(TrtRunner(load_engine(path)[1], name=f"trt:{path.name}"))
        else:
            runners.append(OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=f"ort:{path.name}"))
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run(runners, data_loader=data)
    return [list(results[runner.name]) for runner in runners]


def compare_models(
    model_a: str | os.PathLike[str],
    model_b: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]] | None = None,
    max_images: int | None = None,
    synthetic: int = 2,
    size: tuple[int, int] | None = None,
    pred_agreement_min: float = DEFAULT_PRED_AGREEMENT,
    rtol: float = DEFAULT_RELATIVE_ERROR,
    tolerances: Mapping[str, float] | None = None,
) -> ComparisonReport:
    """Run ``model_a`` (the reference) and ``model_b`` on the same inputs and compare outputs.

    ``images``: files or folders (up to ``max_images``), preprocessed as the runtime does;
    without them ``synthetic`` seeded noise images of ``size`` (default: the export size, else
    256 x 256). Compared: every contract output both sides have (``pred``, PGN maps,
    baselines, the logits output). ``pred_agreement_min``: minimum % of equal pixels;
    ``rtol``: the default maximum relative error; ``tolerances``: per-output overrides.
    """
    from pgn_deploy.engines.feeds import image_batches, synthetic_batches

    path_a, path_b = Path(model_a), Path(model_b)
    if _is_plan(path_a):
        raise BadInputError(f"{path_a}: the reference (first model) must be an ONNX file")
    meta_a, outputs_a = _side(path_a)
    meta_b, outputs_b = _side(path_b)
    if meta_a.gt_input or meta_b.gt_input:
        raise BadInputError("models with the gt label input need explicit feeds; compare them in Python")
    wanted = [*meta_a.score_outputs, *([meta_a.pred] if meta_a.pred else []), meta_a.head.logits_output]
    shared = [name for name in dict.fromkeys(wanted) if name in outputs_a and name in outputs_b]
    if not shared:
        raise BadInputError(f"{path_a} and {path_b} share no contract output to compare")
    tolerances = dict(tolerances or {})
    unknown = sorted(set(tolerances) - set(shared))
    if unknown:
        raise BadInputError(f"tolerances name outputs that are not compared: {', '.join(unknown)}")
    per_output = {name: float(tolerances.get(name, rtol)) for name in shared}
    dtype = np.dtype(np.float32)
    feeds = (image_batches(meta_a.input, dtype, images, max_images) if images
             else synthetic_batches(meta_a.input, dtype, synthetic, size))
    data = [{meta_a.input.name: batch} for batch in feeds]
    compare = ContractCompare(meta_a, shared, pred_agreement_min, per_output)
    if _is_plan(path_b):
        results_a, results_b = _polygraphy_results([path_a, path_b], data)
        name_b = f"trt:{path_b.name}"
    else:
        results_a, results_b = (_ort_results(path, shared, data) for path in (path_a, path_b))
        name_b = f"ort:{path_b.name}"
    for result_a, result_b in zip(results_a, results_b):
        compare(result_a, result_b)
    return ComparisonReport(model_a=str(path_a), model_b=str(path_b), runner_a=f"ort:{path_a.name}",
                            runner_b=name_b, images=len(data), outputs=compare.summary())
