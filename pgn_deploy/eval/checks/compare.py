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
  pointwise relative error, the Pearson and the Spearman rank correlation are reported alongside.

When either model is quantized (metadata precision ``int8``/``fp8``) the fp32 side is the
reference whatever the order, and the outputs are judged over all pixels of all images pooled:
``pred`` agreement >= 99 %, every float map with Pearson >= 0.99 and median pointwise relative
error <= 2 %. With
``datasets`` (``KIND:DIR`` with OoD labels, as ``pgn-eval`` reads them) both models run over
every frame through :class:`~pgn_deploy.runtime.Runtime` and each score map's pixel AuPRC and
FPR95 (:func:`~pgn_deploy.eval.metrics.ood.evaluate_ood`) are compared: the change must stay
within 1.0 point (AuPRC) and 2.0 points (FPR95).
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
QUANTIZED = ("int8", "fp8")
QUANTIZED_PRED_AGREEMENT = 99.0
QUANTIZED_MEDIAN_ERROR = 0.02
QUANTIZED_PEARSON = 0.99
AUPRC_POINTS = 1.0
FPR95_POINTS = 2.0
HIGHER_IS_BETTER = ("agreement_%",)
ABSOLUTE_CHANGE = ("AuPRC_change_points", "FPR95_change_points")


@dataclasses.dataclass
class OutputComparison:
    """One output's worst value over the images against its tolerance.

    ``metric``: ``"agreement_%"`` (higher is better), ``"relative_error"`` or
    ``"median_relative_error"`` (lower is better), or ``"AuPRC_change_points"`` /
    ``"FPR95_change_points"`` (other minus reference, in percentage points; ``|value|`` must
    not exceed the tolerance; then ``reference_value``/``other_value`` are the metric of each
    side in %). ``pearson``/``spearman``: the worst per-image correlation of a float map with
    the reference (``min_pearson``: the bound the verdict also applied, if any).
    """

    name: str
    metric: str
    value: float
    tolerance: float
    passed: bool
    median_pointwise_error: float | None = None
    pearson: float | None = None
    spearman: float | None = None
    min_pearson: float | None = None
    reference_value: float | None = None
    other_value: float | None = None

    @property
    def relation(self) -> str:
        """How ``value`` is held against ``tolerance``: ``>=``, ``<=`` or ``|.|<=``."""
        if self.metric in HIGHER_IS_BETTER:
            return ">="
        return "|.|<=" if self.metric in ABSOLUTE_CHANGE else "<="

    def to_json(self) -> dict[str, Any]:
        """Every field, ``None`` where not measured."""
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
        """Whether every output met its tolerance."""
        return all(o.passed for o in self.outputs)

    def to_text(self) -> str:
        """What ``pgn-check --against`` prints: one row per output (with correlations or the two
        sides' metric where measured) and the verdict."""
        lines = [f"{self.runner_a} (reference) vs {self.runner_b}: {self.images} input(s)"]
        for row in self.outputs:
            extra = "" if row.pearson is None else f"  pearson {row.pearson:.4f}  spearman {row.spearman:.4f}"
            if row.reference_value is not None:
                extra = f"  {row.reference_value:.2f} -> {row.other_value:.2f}"
            lines.append(f"  {row.name:32s} {row.metric:21s} {row.value:<10.4g} {row.relation:5s} {row.tolerance:<8g} "
                         f"{'PASS' if row.passed else 'FAIL'}{extra}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``model_a`` is the reference)."""
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


def median_pointwise_error(reference: np.ndarray, other: np.ndarray) -> float:
    """Median over pixels of ``|a - b| / |a|`` in float64 (``|a|`` floored at float32's tiny)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    return float(np.median(np.abs(a - b) / np.maximum(np.abs(a), np.finfo(np.float32).tiny)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array (ties in order of appearance; float maps rarely tie)."""
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def correlations(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) correlation of two maps over their pixels, in float64; 1.0 for two
    equal constant maps, 0.0 for a constant map against a varying one or a non-finite value."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(other, dtype=np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0, 0.0
    if a.std() == 0 or b.std() == 0:
        same = float(np.array_equal(a, b))
        return same, same
    return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def pred_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Percentage of pixels with the same class id."""
    if reference.shape != other.shape:
        raise BadInputError(f"pred shapes differ: {reference.shape} vs {other.shape}")
    return 100.0 * float(np.mean(reference == other)) if reference.size else 100.0


class ContractCompare:
    """A Polygraphy compare function: per-output verdicts with per-output tolerances.

    Called by ``Comparator.compare_accuracy`` once per iteration with the two runners'
    ``IterationResult``; records the metric values so the report can give the worst ones.
    """

    def __init__(self, meta: Metadata, outputs: list[str], pred_min: float, tolerances: Mapping[str, float],
                 quantized: bool = False):
        self.meta = meta
        self.outputs = outputs
        self.pred_min = pred_min
        self.tolerances = tolerances
        self.quantized = quantized
        self.values: dict[str, list[float]] = collections.defaultdict(list)
        self.pointwise: dict[str, list[float]] = collections.defaultdict(list)
        self.pearson: dict[str, list[float]] = collections.defaultdict(list)
        self.spearman: dict[str, list[float]] = collections.defaultdict(list)
        self.maps: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def pooled(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        """Keep a quantized comparison's maps: its verdict pools every pixel of every image."""
        self.maps.setdefault(name, ([], []))
        self.maps[name][0].append(a.ravel())
        self.maps[name][1].append(b.ravel())

    def _verdict(self, name: str, relative: float, median: float, pearson: float) -> bool:
        if self.quantized:
            return median <= self.tolerances[name] and pearson >= QUANTIZED_PEARSON
        return relative <= self.tolerances[name]

    def __call__(self, result_a: Any, result_b: Any) -> collections.OrderedDict:
        """Verdict per output for one iteration (``result_a`` is the reference)."""
        verdicts = collections.OrderedDict()
        for name in self.outputs:
            a, b = np.asarray(result_a[name]), np.asarray(result_b[name])
            if self.quantized:
                self.pooled(name, a, b)
            if name == self.meta.pred:
                value = pred_agreement(a, b)
                verdicts[name] = value >= self.pred_min
            else:
                value = relative_error(a, b)
                median = median_pointwise_error(a, b)
                pearson, spearman = correlations(a, b)
                verdicts[name] = self._verdict(name, value, median, pearson)
                self.pointwise[name].append(median)
                self.pearson[name].append(pearson)
                self.spearman[name].append(spearman)
            self.values[name].append(value)
        return verdicts

    def summary(self) -> list[OutputComparison]:
        """One row per output: its worst value over the iterations and the verdict; for a
        quantized comparison the values over all pixels of all images pooled."""
        rows = []
        for name in self.outputs:
            if self.quantized:
                a, b = (np.concatenate(part) for part in self.maps[name])
                if name == self.meta.pred:
                    value = pred_agreement(a, b)
                    rows.append(OutputComparison(name, "agreement_%", value, self.pred_min, value >= self.pred_min))
                    continue
                median = median_pointwise_error(a, b)
                pearson, spearman = correlations(a, b)
                passed = self._verdict(name, relative_error(a, b), median, pearson)
                rows.append(OutputComparison(name, "median_relative_error", median, self.tolerances[name], passed,
                                             median, pearson, spearman, QUANTIZED_PEARSON))
            elif name == self.meta.pred:
                worst = min(self.values[name])
                rows.append(OutputComparison(name, "agreement_%", worst, self.pred_min, worst >= self.pred_min))
            else:
                worst, median = max(self.values[name]), max(self.pointwise[name])
                pearson, spearman = min(self.pearson[name]), min(self.spearman[name])
                rows.append(OutputComparison(name, "relative_error", worst, self.tolerances[name],
                                             worst <= self.tolerances[name], median, pearson, spearman))
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
    pred_agreement_min: float | None = None,
    rtol: float | None = None,
    tolerances: Mapping[str, float] | None = None,
    datasets: Sequence[str] | None = None,
) -> ComparisonReport:
    """Run ``model_a`` (the reference) and ``model_b`` on the same inputs and compare outputs.

    ``images``: files or folders (up to ``max_images``), preprocessed as the runtime does;
    with ``datasets`` (``KIND:DIR`` OoD datasets) and no ``images``, the datasets' frames;
    otherwise ``synthetic`` seeded noise images of ``size`` (default: the export size, else
    256 x 256). Compared: every contract output both sides have (``pred``, PGN maps,
    baselines, the logits output), and with ``datasets`` each score map's AuPRC and FPR95.
    ``pred_agreement_min``: minimum % of equal pixels (default 99.9, 99 for a quantized model);
    ``rtol``: the default maximum relative error (1e-2), for a quantized model the maximum
    median pointwise error (0.02); ``tolerances``: per-output overrides. If ``model_a`` is
    quantized and ``model_b`` is not, the two swap roles (the fp32 model is the reference).
    """
    from pgn_deploy.engines.feeds import image_batches, synthetic_batches

    path_a, path_b = Path(model_a), Path(model_b)
    if _is_plan(path_a):
        raise BadInputError(f"{path_a}: the reference (first model) must be an ONNX file")
    meta_a, outputs_a = _side(path_a)
    meta_b, outputs_b = _side(path_b)
    if meta_a.precision in QUANTIZED and meta_b.precision not in QUANTIZED and not _is_plan(path_b):
        (path_a, meta_a, outputs_a), (path_b, meta_b, outputs_b) = (
            (path_b, meta_b, outputs_b), (path_a, meta_a, outputs_a))
    quantized = meta_b.precision in QUANTIZED or meta_a.precision in QUANTIZED
    if pred_agreement_min is None:
        pred_agreement_min = QUANTIZED_PRED_AGREEMENT if quantized else DEFAULT_PRED_AGREEMENT
    if rtol is None:
        rtol = QUANTIZED_MEDIAN_ERROR if quantized else DEFAULT_RELATIVE_ERROR
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
    opened = [open_ood_dataset(spec) for spec in datasets or []]
    dtype = np.dtype(np.float32)
    files = list(images or []) or [frame.image for dataset in opened for frame in dataset]
    feeds = (image_batches(meta_a.input, dtype, files, max_images) if files
             else synthetic_batches(meta_a.input, dtype, synthetic, size))
    data = [{meta_a.input.name: batch} for batch in feeds]
    compare = ContractCompare(meta_a, shared, pred_agreement_min, per_output, quantized)
    if _is_plan(path_a) or _is_plan(path_b):
        results_a, results_b = _polygraphy_results([path_a, path_b], data)
    else:
        results_a, results_b = (_ort_results(path, shared, data) for path in (path_a, path_b))
    for result_a, result_b in zip(results_a, results_b):
        compare(result_a, result_b)
    rows = compare.summary()
    shared_scores = [name for name in meta_a.score_outputs if name in shared]
    for dataset in opened:
        rows += ood_changes(path_a, path_b, dataset, shared_scores)
    return ComparisonReport(model_a=str(path_a), model_b=str(path_b), runner_a=_runner_name(path_a),
                            runner_b=_runner_name(path_b), images=len(data), outputs=rows)


def _runner_name(path: Path) -> str:
    return f"{'trt' if _is_plan(path) else 'ort'}:{path.name}"






def open_ood_dataset(spec: str) -> Any:
    """``KIND:DIR`` of a dataset with OoD labels (:func:`pgn_deploy.eval.paper.datasets.open_dataset`)."""
    from pgn_deploy.eval.paper.datasets import open_dataset

    dataset = open_dataset(spec)
    if not dataset.is_ood:
        raise BadInputError(f"dataset {spec!r} has no OoD labels; give an OoD kind (road_anomaly21, ...)")
    if not len(dataset):
        raise BadInputError(f"dataset {spec!r} has no labelled frames")
    return dataset


def ood_changes(reference: Path, other: Path, dataset: Any, maps: Sequence[str]) -> list[OutputComparison]:
    """Per score map, the change (other - reference, percentage points) of pixel AuPRC and FPR95
    on ``dataset``; both models run through the runtime on ONNX Runtime's CPU provider (a plan
    on TensorRT) at each frame's own size."""
    from pgn_deploy.eval.metrics.ood import evaluate_ood
    from pgn_deploy.eval.metrics.score_io import ArrayFrame
    from pgn_deploy.runtime import Runtime

    runtimes = [Runtime(path, "trt" if _is_plan(path) else "ort-cpu") for path in (reference, other)]
    scores: dict[tuple[int, str], list[ArrayFrame]] = collections.defaultdict(list)
    for frame in dataset:
        image, labels = frame.load_image(), frame.load_label()
        for side, runtime in enumerate(runtimes):
            result = runtime.run(image, color="BGR")
            for name in maps:
                scores[side, name].append(ArrayFrame(frame.id, result.scores[name], labels))
    rows = []
    for name in maps:
        ref, new = (evaluate_ood(scores[side, name], dataset.track).pixel for side in (0, 1))
        label = f"{name}@{dataset.kind}"
        for metric, a, b, tolerance in (("AuPRC_change_points", ref.auprc, new.auprc, AUPRC_POINTS),
                                        ("FPR95_change_points", ref.fpr95, new.fpr95, FPR95_POINTS)):
            change = 100.0 * (b - a)
            rows.append(OutputComparison(label, metric, change, tolerance, bool(abs(change) <= tolerance),
                                         reference_value=100.0 * a, other_value=100.0 * b))
    return rows
