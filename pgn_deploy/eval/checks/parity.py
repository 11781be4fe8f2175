"""Parity of a grafted model: the checks of ``pgn-check`` as an API returning a report.

:func:`check_parity` runs the grafted model with ONNX Runtime on the CPU (graph optimizations
off, so that every variant of the graph runs the same kernels) on seeded random inputs
(standard normal, i.e. already normalized images) and compares, per output:

==================== =====================================================================
check                what is compared (tolerance on max abs error / scale of the expected)
==================== =====================================================================
``outputs``          every output of the metadata is present and finite; maps are >= 0;
                     ``pred`` holds class ids
``pruned``           the original outputs against the same graph with every PGN output
                     pruned: bit-identical (tolerance 0)
``self``             every map, baseline and ``pred`` against :mod:`pgn_deploy.reference` in
                     float64 on the graph's own head tensors (``metadata.head.features`` and
                     ``head_logits``, exposed as outputs of an in-memory copy; penultimate maps
                     also read psi2 and z, :mod:`~pgn_deploy.eval.checks.penultimate`): 1e-5
``reference-outputs`` (``reference`` given) the original outputs against the PyTorch model (or
                     the reference ONNX model): 1e-4 (float32 against float32, other kernels)
``reference``        every map, baseline and ``pred`` against pgn_deploy.reference in float64
                     on the PyTorch model's own head tensors (the ``Conv2d`` modules whose
                     weights equal the ONNX head convs, hooked): 1e-4
``autograd``         form ``exact``: :func:`~pgn_deploy.reference.autograd_pgn` (float64, the
                     model's real forward, differentiated w.r.t. the head conv weights and,
                     with ``bias``, one bias) at sampled pixels against the graph's map where
                     it is at the gradient's resolution, else against the float64 closed
                     form at the feature resolution: 1e-5
==================== =====================================================================

The scale is the largest magnitude of the expected tensor, so a tolerance is relative to the
map's range. For a PGN map with p < 1 the tolerance is divided by p: the root ``(...)^(1/p)``
multiplies relative errors by 1/p, and ``|x|^p`` is steep near 0, so float32 noise of small
features grows as p falls. The comparisons with the reference use 1e-2 (fp16) or 5e-2 (bf16)
for a half-precision network. A map that overflows float32 fails (very small p: the map is
about ``E^(1/p)`` for E feature channels). Where a value depends on the argmax (label ``oh``,
``pred``), pixels whose two largest logits lie within twice the largest logit discrepancy
between the two sides (plus 1e-6 of the logits' scale) are left out, since either side's argmax
is right there; the note gives their count.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import (
    BadInputError,
    Metadata,
    UnsupportedModelError,
    load_onnx,
    parse_map_name,
    parse_pgn_output_name,
    parse_shape,
    read_metadata,
    require,
)
from pgn_deploy.eval.checks import penultimate

TOLERANCES = {"pruned": 0.0, "self": 1e-5, "reference-outputs": 1e-4, "reference": 1e-4, "autograd": 1e-5}
PENULTIMATE_NOTE = ("penultimate-layer map: compared by the self and reference checks "
                    "(autograd against the PyTorch model covers the last layer)")
HALF_PRECISION_TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2}
TIE_FLOOR = 1e-6
_MAP_CHECKS = ("self", "reference", "autograd")
DEFAULT_SIZE = (64, 64)
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclasses.dataclass
class CheckResult:
    """One comparison. ``status``: ``pass``, ``fail`` or ``skip`` (with the reason in ``note``);
    ``max_abs``/``max_rel``: the worst error over every sample (``max_rel`` = ``max_abs`` /
    scale of the expected tensor); ``compared``: how many values were compared."""

    check: str
    output: str
    status: str
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: float | None = None
    compared: int = 0
    note: str = ""

    @property
    def passed(self) -> bool:
        """True unless the check failed (a skipped check passes)."""
        return self.status != "fail"


@dataclasses.dataclass
class ParityReport:
    """Every :class:`CheckResult` of one :func:`check_parity` run."""

    model: str
    reference: str | None
    input_shape: tuple[int, int, int, int]
    samples: int
    seed: int
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(r.passed for r in self.results)

    @property
    def verdict(self) -> str:
        """``fail`` when a check failed, ``skip`` when no map was compared with a reference
        (every such check skipped: nothing was shown right), else ``pass``."""
        if not self.passed:
            return "fail"
        compared = any(r.status == "pass" and r.compared > 0 for r in self.results if r.check in _MAP_CHECKS)
        return "pass" if compared else "skip"

    def to_text(self) -> str:
        """What ``pgn-check`` prints: one row per check and the verdict (PASS, FAIL, or SKIP when no
        map was compared with a reference)."""
        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.3g}"

        shape = "x".join(map(str, self.input_shape))
        lines = [f"{self.model}: {self.samples} random input(s) of {shape}, seed {self.seed}"
                 + (f", reference {self.reference}" if self.reference else "")]
        rows = [("check", "output", "max abs", "max rel", "tol", "result", "note")]
        rows += [(r.check, r.output, cell(r.max_abs), cell(r.max_rel), cell(r.tolerance), r.status.upper(), r.note)
                 for r in self.results]
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[6] for row in rows]
        skipped = " (no map was compared with a reference)" if self.verdict == "skip" else ""
        lines.append(self.verdict.upper() + skipped)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "model": self.model,
            "reference": self.reference,
            "input_shape": list(self.input_shape),
            "samples": self.samples,
            "seed": self.seed,
            "tolerances": TOLERANCES,
            "passed": self.passed,
            "verdict": self.verdict,
            "results": [dataclasses.asdict(r) for r in self.results],
        }


def check_parity(
    model: str | Path,
    reference: str | Path | None = None,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | str | None = None,
    trust_pickle: bool = False,
    samples: int = 2,
    seed: int = 0,
    input_shape: str | Sequence[int] | None = None,
    pixels: int = 16,
) -> ParityReport:
    """Check the grafted ``model`` (a ``.pgn.onnx`` file); see the module doc for the checks.

    ``reference``: the checkpoint it was exported from (any kind pgn-export reads, with
    ``arch``/``arch_kwargs``/``trust_pickle`` as there) or the original ONNX model.
    ``samples`` random inputs of ``input_shape`` (default: batch 2 at the exported size, else
    64 x 64) drawn with ``seed``; ``pixels``: autograd pixels per sample and map (form exact).
    Raises a PGNError for a file that is missing, not grafted or not runnable.
    """

    if samples < 1 or pixels < 1:
        raise BadInputError("--samples and --pixels must be at least 1")
    shape = None if input_shape is None else parse_shape(input_shape, 4, "input shape")
    onnx_model = load_onnx(model)
    meta = read_metadata(onnx_model)
    graph = _GraphRunner(onnx_model, meta)
    shape = shape or graph.default_shape()
    missing = _missing_outputs(onnx_model, meta)
    if missing:  # nothing else can be compared
        return ParityReport(str(model), str(reference) if reference else None, shape, 0, seed, missing)
    torch_side = _load_reference(reference, arch, arch_kwargs, trust_pickle, onnx_model, meta)
    rng = np.random.default_rng(seed)
    results: list[CheckResult] = []
    for _ in range(samples):
        x = rng.standard_normal(shape).astype(np.float32)
        results += _check_sample(graph, torch_side, meta, x, rng, pixels)
    return ParityReport(str(model), str(reference) if reference else None, shape, samples, seed, _merge(results))


# --------------------------------------------------------------------------- one sample
def _check_sample(
    graph: _GraphRunner, torch_side: Any, meta: Metadata, x: np.ndarray, rng: np.random.Generator, pixels: int
) -> list[CheckResult]:
    original = graph.run_pruned(x)
    logits_shape = original[meta.head.logits].shape
    gt = rng.integers(0, meta.num_classes, size=(x.shape[0], *logits_shape[-2:])) if meta.gt_input else None
    run = graph.run(x, gt)
    results = _sanity(meta, run)
    results += [
        _compare("pruned", name, run[name], original[name], _tolerance("pruned", name, meta))
        for name in meta.original_outputs
    ]
    head = _HeadTensors.from_graph(run, meta)
    notes: dict[str, str] = {}
    expected = _with_penultimate(head, graph.model, meta, gt, lambda: penultimate.graph_inputs(meta, run), notes)
    results += _compare_maps("self", meta, run, expected, _tie_mask(head, None), notes)
    if isinstance(torch_side, _OnnxReference):
        results += torch_side.check(meta, run, x)
    elif isinstance(torch_side, _TorchReference):
        results += torch_side.check(meta, run, head, x, gt, rng, pixels)
    return results


def _missing_outputs(model: Any, meta: Metadata) -> list[CheckResult]:
    """A failed ``outputs`` result for every output of the metadata that the graph lacks."""
    present = {o.name for o in model.graph.output}
    listed = [*meta.original_outputs, *meta.score_outputs, *([meta.pred] if meta.pred else [])]
    return [
        CheckResult("outputs", name, "fail", note="listed in the metadata but not a graph output")
        for name in listed
        if name not in present
    ]


def _sanity(meta: Metadata, run: Mapping[str, np.ndarray]) -> list[CheckResult]:
    """Original outputs finite; maps N x 1 x H x W, finite, >= 0; ``pred`` ids in range."""
    results = []
    for name in meta.original_outputs:
        bad = int(np.count_nonzero(~np.isfinite(run[name])))
        results.append(CheckResult("outputs", name, "fail" if bad else "pass", compared=run[name].size,
                                   note=f"{bad} non-finite values" if bad else ""))
    for name in meta.score_outputs:
        values = run[name]
        problems = []
        if values.ndim != 4 or values.shape[1] != 1:
            problems.append(f"shape {list(values.shape)} is not N x 1 x H x W")
        if (bad := int(np.count_nonzero(~np.isfinite(values)))):
            problems.append(f"{bad} non-finite values")
        if (negative := int(np.count_nonzero(values < 0))):
            problems.append(f"{negative} negative values")
        results.append(CheckResult("outputs", name, "fail" if problems else "pass", compared=values.size,
                                   note="; ".join(problems)))
    if meta.pred:
        pred = run[meta.pred]
        bad = int(np.count_nonzero((pred < 0) | (pred >= meta.num_classes)))
        results.append(CheckResult("outputs", meta.pred, "fail" if bad else "pass", compared=pred.size,
                                   note=f"{bad} ids outside [0, {meta.num_classes})" if bad else ""))
    return results


# --------------------------------------------------------------------------- expected values
class _SkipCheck(Exception):
    """A comparison that cannot be made for this model; the message says why."""


class _NoMatchingConv(Exception):
    """The reference model has no Conv2d with the weights of a head conv (wrong checkpoint)."""


@dataclasses.dataclass
class _HeadTensors:
    """One side's head tensors as float64 torch tensors: the classifier inputs (``features``),
    the summed classifier output at the feature resolution (``head_logits``) and the model's
    output logits (``logits``)."""

    features: list[Any]
    head_logits: Any
    logits: Any
    penultimate_inputs: Any = None

    @classmethod
    def from_graph(cls, run: Mapping[str, np.ndarray], meta: Metadata) -> _HeadTensors:
        torch = require("torch", "pgn-check")

        def as64(name: str) -> Any:
            return torch.from_numpy(np.asarray(run[name], dtype=np.float64))

        return cls([as64(f) for f in meta.head.features], as64(meta.head.head_logits), as64(meta.head.logits))

    def expected(self, meta: Metadata, gt: np.ndarray | None) -> dict[str, np.ndarray]:
        """Every map, baseline and ``pred`` of ``meta`` recomputed in float64 (N x H x W each)."""
        from pgn_deploy import reference

        torch = require("torch", "pgn-check")
        head = meta.head
        if "+" in head.resize or any("+" in mode for mode in head.feature_resize):
            raise _SkipCheck(f"the model resizes its logits several times in a row ({head.resize})")
        if head.kind == "linear":
            raise _SkipCheck("a per-token (MatMul) classifier: the float64 reference here covers Conv heads only")
        size = tuple(self.head_logits.shape[-2:])
        windows = _windows(meta)
        features = self.features if windows else [
            _resize(psi, size, mode) for psi, mode in zip(self.features, _branch_modes(meta, len(self.features)))
        ]
        output_size = tuple(self.logits.shape[-2:]) if head.resize != "none" else None
        gt_tensor = torch.from_numpy(gt) if gt is not None else None
        scale = None if head.class_scale is None else torch.tensor(head.class_scale, dtype=torch.float64)
        maps = reference.pgn_maps(
            features, self.head_logits, meta.spec, output_size, head.resize, head.align_corners, gt_tensor,
            windows, scale,
        )
        if meta.baselines:
            maps.update(reference.baseline_maps(self.logits))
        if meta.pred:
            maps[meta.pred] = self.logits.argmax(dim=1)
        return {name: value.numpy() for name, value in maps.items()}


def _windows(meta: Metadata) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None:
    """Per branch (kernel, pads, dilations) when a classifier is not 1x1 without padding."""
    head = meta.head
    windows = [(tuple(k), tuple(p), tuple(d)) for k, p, d in zip(head.kernel, head.pads, head.dilations)]
    return windows if any(k != (1, 1) or any(p) for k, p, _ in windows) else None


def _branch_modes(meta: Metadata, count: int) -> list[str]:
    return list(meta.head.feature_resize) or ["none"] * count


def _resize(x: Any, size: tuple[int, int], mode: str, align_corners: bool = False) -> Any:
    """``x`` resized like the model resizes (``mode`` ``"none"``: unchanged)."""
    from pgn_deploy.reference import resize_like_logits

    return x if mode == "none" else resize_like_logits(x, size, mode, align_corners)


def _near_ties(logits: np.ndarray, other: np.ndarray | None) -> np.ndarray:
    """N x h x w mask of pixels whose two largest logits (N x C x h x w) lie within
    ``TIE_FLOOR`` of their scale plus twice that pixel's largest discrepancy to ``other``."""
    margin = TIE_FLOOR * (float(np.abs(logits).max()) or 1.0)
    if other is not None:
        margin = margin + 2.0 * np.abs(logits - other).max(axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= margin


def _tie_mask(mine: _HeadTensors, other: _HeadTensors | None) -> Callable[[str, Metadata], np.ndarray]:
    """``(output, meta) -> N x H x W mask`` of the pixels of that output whose argmax is not
    reliable (see :func:`_near_ties`); a near tie at the feature resolution marks every output
    pixel the model's resize draws from it."""
    torch = require("torch", "pgn-check")

    def numpy(t: Any) -> np.ndarray | None:
        return None if t is None else t.numpy()

    def mask(name: str, meta: Metadata) -> np.ndarray:
        if name == meta.pred or meta.spec.resolution == "output":
            return _near_ties(mine.logits.numpy(), numpy(other.logits if other else None))
        ties = _near_ties(mine.head_logits.numpy(), numpy(other.head_logits if other else None))
        if meta.spec.keep_feature_size or meta.head.resize == "none":
            return ties
        spread = _resize(torch.from_numpy(ties[:, None].astype(np.float64)), tuple(mine.logits.shape[-2:]),
                         meta.head.resize, meta.head.align_corners)
        return spread[:, 0].numpy() != 0

    return mask


def _argmax_dependent(name: str, meta: Metadata) -> bool:
    parsed = parse_map_name(name)
    return name == meta.pred or (parsed is not None and parsed[0] == "oh")


def _compare_maps(
    check: str,
    meta: Metadata,
    run: Mapping[str, np.ndarray],
    expected: Callable[[], dict[str, np.ndarray]],
    ties: Callable[[str, Metadata], np.ndarray],
    notes: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Every map, baseline and ``pred`` of ``run`` against ``expected()`` (N x H x W each); a
    penultimate map ``expected()`` leaves out is skipped with ``notes["penultimate"]``."""
    names = [*meta.score_outputs, *([meta.pred] if meta.pred else [])]
    try:
        values = expected()
    except _SkipCheck as skip:
        return [CheckResult(check, name, "skip", note=str(skip)) for name in names]
    results = []
    for name in names:
        if name not in values:  # a penultimate-layer map
            results.append(CheckResult(check, name, "skip", note=(notes or {}).get("penultimate", PENULTIMATE_NOTE)))
            continue
        actual = run[name][:, 0] if run[name].ndim == 4 else run[name]
        keep = ~ties(name, meta) if _argmax_dependent(name, meta) else None
        compare = _compare_ids if name == meta.pred else _compare
        results.append(compare(check, name, actual, values[name], _tolerance(check, name, meta), keep))
    return results


def _with_penultimate(
    head: _HeadTensors, model: Any, meta: Metadata, gt: np.ndarray | None, psi2_z: Callable[[], tuple[Any, Any]],
    notes: dict[str, str],
) -> Callable[[], dict[str, np.ndarray]]:
    """``expected()`` for :func:`_compare_maps`: ``head``'s maps plus the penultimate maps from
    ``psi2_z()`` (:mod:`~pgn_deploy.eval.checks.penultimate`); when those cannot be recomputed,
    the reason goes to ``notes["penultimate"]``."""

    def expected() -> dict[str, np.ndarray]:
        values = head.expected(meta, gt)
        if meta.penultimate:
            try:
                inputs, pre_activation = psi2_z()
                values.update(penultimate.expected_maps(model, meta, inputs, pre_activation, head.head_logits,
                                                        tuple(head.logits.shape[-2:]), gt))
            except penultimate.UncheckableError as why:
                notes["penultimate"] = f"penultimate-layer map not compared: {why}"
        return values

    return expected


def _kept(
    check: str, name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float, keep: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, str] | CheckResult:
    """``actual`` and ``expected`` where ``keep`` and a note, or the result when nothing is left."""
    if actual.shape != expected.shape:
        return CheckResult(check, name, "fail", tolerance=tolerance,
                           note=f"shape {list(actual.shape)}, expected {list(expected.shape)}")
    note = ""
    if keep is not None:
        note = f"{int(keep.size - keep.sum())} near-tie pixels left out" if not keep.all() else ""
        actual, expected = actual[keep], expected[keep]
    if expected.size == 0:
        return CheckResult(check, name, "skip", tolerance=tolerance, note="every pixel is a near tie")
    return actual, expected, note


def _compare(
    check: str, name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float, keep: np.ndarray | None = None
) -> CheckResult:
    """Max abs error of ``actual`` against ``expected`` where ``keep``, relative to the scale
    (largest magnitude) of ``expected``."""
    kept = _kept(check, name, actual, expected, tolerance, keep)
    if isinstance(kept, CheckResult):
        return kept
    actual, expected, note = kept
    error = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    scale = float(np.abs(expected).max())
    relative = error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))
    status = "pass" if relative <= tolerance else "fail"
    return CheckResult(check, name, status, error, relative, tolerance, int(expected.size), note)


def _compare_ids(
    check: str, name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float, keep: np.ndarray | None = None
) -> CheckResult:
    """Class maps must agree on every kept pixel: ``max_abs`` counts the pixels that differ,
    ``max_rel`` is their fraction (tolerance 0)."""
    kept = _kept(check, name, actual, expected, 0.0, keep)
    if isinstance(kept, CheckResult):
        return kept
    actual, expected, note = kept
    differ = int(np.count_nonzero(actual != expected))
    return CheckResult(check, name, "fail" if differ else "pass", float(differ), differ / expected.size, 0.0,
                       int(expected.size), note)


def _tolerance(check: str, name: str, meta: Metadata) -> float:
    """The tolerance of ``check`` for output ``name``: :data:`TOLERANCES`, looser for a
    half-precision network against PyTorch, divided by p for a PGN map with p < 1."""
    tolerance = TOLERANCES[check]
    if check.startswith("reference"):
        tolerance = HALF_PRECISION_TOLERANCE.get(meta.precision, tolerance)
    parsed = parse_map_name(name)
    return tolerance / min(parsed[1], 1.0) if parsed is not None else tolerance


def _merge(results: list[CheckResult]) -> list[CheckResult]:
    """One result per (check, output): worst errors, summed counts, fail over skip over pass."""
    merged: dict[tuple[str, str], CheckResult] = {}
    rank = {"pass": 0, "skip": 1, "fail": 2}
    for result in results:
        key = (result.check, result.output)
        if key not in merged:
            merged[key] = dataclasses.replace(result)
            continue
        old = merged[key]
        old.max_abs = _max_or_none(old.max_abs, result.max_abs)
        old.max_rel = _max_or_none(old.max_rel, result.max_rel)
        old.compared += result.compared
        old.status = max(old.status, result.status, key=rank.__getitem__)
        if result.note and result.note not in old.note:
            old.note = f"{old.note}; {result.note}" if old.note else result.note
    return list(merged.values())


def _max_or_none(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


# --------------------------------------------------------------------------- ONNX Runtime
class _GraphRunner:
    """The grafted model in ONNX Runtime twice: with the head tensors (``features``,
    ``head_logits``, ``logits`` of the metadata) as extra outputs, and pruned to the original
    outputs (plus ``logits``, which the original outputs compute anyway)."""

    def __init__(self, model: Any, meta: Metadata) -> None:
        self.model, self.meta = model, meta
        head = meta.head
        self.head_tensors = list(dict.fromkeys([*head.features, head.head_logits, head.logits,
                                                *penultimate.graph_tensors(meta)]))
        inputs = {i.name for i in model.graph.input}
        outputs = [o.name for o in model.graph.output]
        exposed = [n for n in self.head_tensors if n not in inputs and n not in outputs]
        self.full = _session(_with_outputs(model, [*outputs, *exposed]))
        self.pruned = _session(_pruned(model, list(dict.fromkeys([*meta.original_outputs, head.logits]))))
        input_type = next(i.type for i in self.full.get_inputs() if i.name == meta.input.name)
        self.input_dtype = _ORT_DTYPES.get(input_type)
        if self.input_dtype is None:
            raise UnsupportedModelError(f"pgn-check cannot feed an input of type {input_type}")

    def default_shape(self) -> tuple[int, int, int, int]:
        """Batch 2 at the exported size (the metadata's, else the graph's static one, else 64x64)."""
        graph_input = next(i for i in self.model.graph.input if i.name == self.meta.input.name)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
        batch = dims[0] or 2
        channels = dims[1] or len(self.meta.input.mean)
        size = self.meta.input.size or (tuple(dims[2:]) if None not in dims[2:] else DEFAULT_SIZE)
        return (batch, channels, *size)

    def run(self, x: np.ndarray, gt: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self.meta.input.name: x.astype(self.input_dtype)}
        if gt is not None:
            feeds[self.meta.gt_input] = gt.astype(np.int64)
        names = [o.name for o in self.full.get_outputs()]
        values = dict(zip(names, _run(self.full, names, feeds)))
        for name in self.head_tensors:  # a head tensor may be the graph input itself
            values.setdefault(name, feeds.get(name))
        return values

    def run_pruned(self, x: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.pruned.get_outputs()]
        return dict(zip(names, _run(self.pruned, names, {self.meta.input.name: x.astype(self.input_dtype)})))


def _session(model: Any) -> Any:
    import onnxruntime as ort

    from pgn_deploy.contract import first_line
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise UnsupportedModelError(f"ONNX Runtime cannot load the model: {first_line(exc)}") from None


def _run(session: Any, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from pgn_deploy.contract import first_line

    try:
        return session.run(names, feeds)
    except Exception as exc:  # ORT raises its own exception types
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        raise BadInputError(f"ONNX Runtime fails on inputs {shapes}: {first_line(exc)}") from None


def _with_outputs(model: Any, outputs: list[str]) -> Any:
    """A copy of ``model`` whose graph outputs are ``outputs`` (Polygraphy)."""
    from polygraphy.backend.onnx import modify_outputs

    return modify_outputs(model, outputs=outputs, copy=True)


def _pruned(model: Any, outputs: list[str]) -> Any:
    """A copy of ``model`` with only ``outputs`` and the nodes they need (onnx-graphsurgeon)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    graph.outputs = [tensors[name] for name in outputs]
    graph.cleanup(remove_unused_graph_inputs=True)
    return gs.export_onnx(graph)


# --------------------------------------------------------------------------- references
@dataclasses.dataclass
class _OnnxReference:
    """The original (ungrafted) ONNX model as the reference for the original outputs."""

    session: Any
    input_name: str

    def check(self, meta: Metadata, run: Mapping[str, np.ndarray], x: np.ndarray) -> list[CheckResult]:
        names = [o.name for o in self.session.get_outputs()]
        expected = dict(zip(names, _run(self.session, names, {self.input_name: x})))
        return [
            _compare("reference-outputs", n, run[n], expected[n], _tolerance("reference-outputs", n, meta))
            for n in meta.original_outputs
        ]


def _load_reference(
    reference: str | Path | None,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | str | None,
    trust_pickle: bool,
    onnx_model: Any,
    meta: Metadata,
) -> _OnnxReference | _TorchReference | None:
    if reference is None:
        return None
    from pgn_deploy.export.api import parse_arch_kwargs
    from pgn_deploy.export.load import load_model

    loaded = load_model(reference, arch, parse_arch_kwargs(arch_kwargs), trust_pickle)
    if loaded.kind == "onnx":
        session = _session(loaded.onnx_model)
        missing = [n for n in meta.original_outputs if n not in {o.name for o in session.get_outputs()}]
        if missing:
            raise BadInputError(f"the reference ONNX model has no output(s) {', '.join(missing)}")
        return _OnnxReference(session, session.get_inputs()[0].name)
    return _TorchReference.create(loaded.module, onnx_model, meta)


class _TorchReference:
    """The PyTorch model and its head ``Conv2d`` modules (found by their weights).

    ``unavailable`` is the result reported instead of the head checks when they cannot run:
    a ``fail`` when no Conv2d has the head's weights (the wrong checkpoint), a ``skip`` for a
    TorchScript module (it cannot be hooked), for layout ops after the logits (the model's
    output is not the logits tensor) or for head weights that are not constants."""

    def __init__(self, module: Any, conv_names: list[str], unavailable: CheckResult | None = None,
                 onnx_model: Any = None, penultimate_conv: str | None = None) -> None:
        self.module = module
        self.conv_names = conv_names
        self.unavailable = unavailable
        self.onnx_model = onnx_model
        self.penultimate_conv = penultimate_conv  # the Conv2d whose input is psi2, when found
        self._module64: Any = None

    @classmethod
    def create(cls, module: Any, onnx_model: Any, meta: Metadata) -> _TorchReference:
        torch = require("torch", "pgn-check")
        if isinstance(module, torch.jit.ScriptModule):
            note = "a TorchScript reference cannot be hooked: only the original outputs are compared"
            return cls(module, [], CheckResult("reference", "*", "skip", note=note))
        if meta.head.logits != meta.head.logits_output:
            note = f"layout ops follow the logits in {meta.head.logits_output!r}: only the outputs are compared"
            return cls(module, [], CheckResult("reference", "*", "skip", note=note))
        if meta.head.kind == "linear":
            note = "a per-token (MatMul) classifier: the float64 reference here covers Conv heads only"
            return cls(module, [], CheckResult("reference", "*", "skip", note=note))
        if meta.head.resize != "none" and (meta.head.affine or meta.head.class_scale is not None):
            note = ("a per-class affine (" + (", ".join(meta.head.affine) or "a BatchNorm folded into the classifier")
                    + ") lies between the classifier and the model's resize: the reference cannot rebuild the "
                    "logits at the classifier's resolution, only the outputs are compared")
            return cls(module, [], CheckResult("reference", "*", "skip", note=note))
        try:
            return cls(module, _matching_convs(module, onnx_model, meta), None, onnx_model,
                       _matching_penultimate_conv(module, onnx_model, meta))
        except _SkipCheck as skip:
            return cls(module, [], CheckResult("reference", "*", "skip", note=str(skip)))
        except _NoMatchingConv as mismatch:
            return cls(module, [], CheckResult("reference", "*", "fail", note=str(mismatch)))

    def check(
        self, meta: Metadata, run: Mapping[str, np.ndarray], graph_head: _HeadTensors,
        x: np.ndarray, gt: np.ndarray | None, rng: np.random.Generator, pixels: int,
    ) -> list[CheckResult]:
        torch = require("torch", "pgn-check")
        outputs, head = self._forward(torch.from_numpy(x), meta)
        results = [
            _compare("reference-outputs", name, run[name], outputs[_output_key(name, meta, outputs)].numpy(),
                     _tolerance("reference-outputs", name, meta))
            for name in meta.original_outputs
        ]
        if self.unavailable is not None:
            return [*results, self.unavailable]
        inputs = None if head.penultimate_inputs is None else head.penultimate_inputs.double()
        head = _HeadTensors([f.double() for f in head.features], head.head_logits.double(), head.logits.double(),
                            inputs)
        notes: dict[str, str] = {}
        expected = _with_penultimate(head, self.onnx_model, meta, gt, lambda: self._psi2_z(head), notes)
        results += _compare_maps("reference", meta, run, expected, _tie_mask(head, graph_head), notes)
        if meta.spec.form == "exact":
            results += self._autograd(meta, run, graph_head, x, gt, rng, pixels)
        return results

    def _psi2_z(self, head: _HeadTensors) -> tuple[Any, Any]:
        """psi2 (the penultimate Conv2d's input) and psi (standing in for z: the activation's
        derivative reads the same on both) of the PyTorch forward pass."""
        if head.penultimate_inputs is None:
            raise penultimate.UncheckableError(
                "no Conv2d of the reference, run once per forward pass, has the penultimate conv's weights")
        return head.penultimate_inputs, head.features[0]

    def _forward(
        self, x: Any, meta: Metadata, module: Any = None, bias: Any = None
    ) -> tuple[dict[str, Any], _HeadTensors]:
        """The model's named outputs and its head tensors for ``x`` (in ``x``'s dtype).

        ``module`` defaults to the float32 model, run without autograd; another module (the
        float64 copy) runs with autograd. ``bias`` (1 x C x 1 x 1 zeros) is added to the first
        head conv's output so that the logits depend on it as on the classifier bias."""
        from pgn_deploy.export.onnx_export import segmentation_outputs

        torch = require("torch", "pgn-check")
        grad = module is not None
        module = module if module is not None else self.module
        calls: dict[str, list[tuple[Any, Any]]] = {name: [] for name in self.conv_names}
        modules = dict(module.named_modules())
        handles = []
        psi2: list[Any] = []
        if self.penultimate_conv is not None and not grad:
            handles.append(modules[self.penultimate_conv].register_forward_hook(
                lambda _module, inputs, _output: psi2.append(inputs[0])))
        for index, name in enumerate(self.conv_names):
            def hook(_module: Any, inputs: Any, output: Any, name: str = name, first: bool = index == 0) -> Any:
                if first and bias is not None:
                    output = output + bias
                calls[name].append((inputs[0], output))
                return output

            handles.append(modules[name].register_forward_hook(hook))
        try:
            with torch.set_grad_enabled(grad):
                outputs = segmentation_outputs(module(x))
        finally:
            for handle in handles:
                handle.remove()
        logits = outputs[_output_key(meta.head.logits_output, meta, outputs)]
        if not calls:
            return outputs, _HeadTensors([], None, logits)
        if any(len(c) != 1 for c in calls.values()):
            raise UnsupportedModelError("a head conv of the reference runs more than once per forward pass")
        branches = [c[0][1] for c in calls.values()]
        modes = _branch_modes(meta, len(branches))
        unresized = [tuple(b.shape[-2:]) for b, mode in zip(branches, modes) if mode == "none"]
        if not unresized:
            raise UnsupportedModelError("every head branch of the reference is resized before the sum")
        head_logits = sum(_resize(b, unresized[0], mode) for b, mode in zip(branches, modes))
        if meta.head.resize == "none" and tuple(logits.shape) == tuple(head_logits.shape):
            head_logits = logits  # the logits the model returns: any constant or affine after the convs included
        return outputs, _HeadTensors([c[0][0] for c in calls.values()], head_logits, logits,
                                     psi2[0] if len(psi2) == 1 else None)

    def _autograd(
        self, meta: Metadata, run: Mapping[str, np.ndarray], graph_head: _HeadTensors,
        x: np.ndarray, gt: np.ndarray | None, rng: np.random.Generator, pixels: int,
    ) -> list[CheckResult]:
        """Autograd through the float64 copy of the model at ``pixels`` sampled pixels per map."""
        from pgn_deploy import reference

        torch = require("torch", "pgn-check")
        module64 = self._float64_copy()
        bias = torch.zeros(1, meta.num_classes, 1, 1, dtype=torch.float64, requires_grad=True)
        _, head = self._forward(torch.from_numpy(x).double(), meta, module64, bias)
        modules = dict(module64.named_modules())
        params = [modules[name].weight for name in self.conv_names] + ([bias] if meta.spec.bias else [])
        at_output = meta.spec.resolution == "output"
        logits = head.logits if at_output else head.head_logits
        size = tuple(logits.shape[-2:])
        gt_here = None
        if gt is not None:
            gt_here = torch.from_numpy(gt)
            if not at_output:  # nearest, as the graph and pgn_deploy.reference sample it
                gt_here = torch.nn.functional.interpolate(gt_here[:, None].double(), size=size, mode="nearest")
                gt_here = gt_here[:, 0].long()
        ties = _tie_mask(_HeadTensors(head.features, head.head_logits.detach(), head.logits.detach()), graph_head)
        results = []
        for name in meta.pgn_outputs:
            if parse_pgn_output_name(name) is None:
                results.append(CheckResult("autograd", name, "skip", note=PENULTIMATE_NOTE))
                continue
            label, p = parse_pgn_output_name(name)
            graph_map = run[name][:, 0]
            if graph_map.shape[-2:] == size:  # the graph's map is at the gradient's resolution
                target, against = graph_map, "the graph map"
                excluded = ties(name, meta) if label == "oh" else None
            else:  # same float64 logits on both sides: no tie to fear
                modes = _branch_modes(meta, len(head.features))
                features = [_resize(f.detach(), size, mode) for f, mode in zip(head.features, modes)]
                target = reference.pgn_map(features, logits.detach(), p, label, "exact", meta.spec.bias, gt_here)
                target = target.numpy()
                against, excluded = "the float64 closed form at the feature resolution", None
            chosen = _sample_pixels(target.shape, excluded, pixels, rng)
            if not chosen:
                results.append(CheckResult("autograd", name, "skip", note="every pixel is a near tie"))
                continue
            values = reference.autograd_pgn(logits, params, chosen, p, label, gt_here).detach().numpy()
            picked = np.array([target[pixel] for pixel in chosen])
            result = _compare("autograd", name, picked, values, _tolerance("autograd", name, meta))
            results.append(dataclasses.replace(result, note=f"against {against}"))
        return results

    def _float64_copy(self) -> Any:
        """A float64 copy of the model where only the head conv weights require gradients."""
        if self._module64 is None:
            self._module64 = copy.deepcopy(self.module).double().eval().requires_grad_(False)
            modules = dict(self._module64.named_modules())
            for name in self.conv_names:
                modules[name].weight.requires_grad_(True)
        return self._module64


def _sample_pixels(
    shape: tuple[int, ...], excluded: np.ndarray | None, count: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Up to ``count`` distinct (n, y, x) pixels of an N x H x W map, avoiding ``excluded``."""
    allowed = np.argwhere(~excluded if excluded is not None else np.ones(shape, dtype=bool))
    if len(allowed) == 0:
        return []
    picked = rng.choice(len(allowed), size=min(count, len(allowed)), replace=False)
    return [tuple(int(v) for v in allowed[i]) for i in picked]


def _output_key(name: str, meta: Metadata, outputs: Mapping[str, Any]) -> str:
    """The PyTorch output that the ONNX output ``name`` is: same name, else same position."""
    if name in outputs:
        return name
    keys = list(outputs)
    if len(keys) == len(meta.original_outputs):
        return keys[meta.original_outputs.index(name)]
    raise BadInputError(f"the reference returns {keys}, which do not match the model's outputs {meta.original_outputs}")


def _matching_convs(module: Any, onnx_model: Any, meta: Metadata) -> list[str]:
    """The qualified names of the ``Conv2d`` modules whose weights equal the ONNX head convs'."""
    import onnx_ir as ir

    from pgn_deploy.graft.head import constant_array

    torch = require("torch", "pgn-check")
    nodes = {node.name: node for node in ir.from_proto(onnx_model).graph}
    convs = [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    names = []
    for conv_node in meta.head.conv_nodes:
        node = nodes.get(conv_node)
        weight = constant_array(node.inputs[1]) if node is not None else None
        if weight is None:
            raise _SkipCheck(f"cannot read the weights of the head conv {conv_node!r}")
        match = [
            name for name, m in convs
            if tuple(m.weight.shape) == weight.shape
            and np.array_equal(m.weight.detach().numpy().astype(weight.dtype), weight)
        ]
        if not match:
            scaled = _scaled_match(convs, weight)
            if scaled is None:
                raise _NoMatchingConv(
                    f"no Conv2d of the reference has the weights of the head conv {conv_node!r} (not even up to a "
                    "per-class factor): is it the checkpoint this model was exported from?"
                )
            if meta.head.weights != "trained":
                raise _SkipCheck(
                    f"the head conv {conv_node!r} holds {scaled}'s weights times a per-class factor (a BatchNorm or "
                    "affine folded in by the exporter) and the maps are w.r.t. the graph's weights: the reference "
                    "(w.r.t. the trained weights) is not compared"
                )
            match = [scaled]
        names.append(match[0])
    return names


def _matching_penultimate_conv(module: Any, onnx_model: Any, meta: Metadata) -> str | None:
    """The qualified name of the ``Conv2d`` whose weight is the graph's penultimate kernel,
    exactly (BatchNorm kept) or up to a per-output-channel factor (folded); ``None`` without
    penultimate maps or without such a conv."""
    torch = require("torch", "pgn-check")
    info = meta.penultimate or {}
    node = next((n for n in onnx_model.graph.node if n.name == info.get("conv")), None)
    if node is None:
        return None
    try:
        weight = penultimate.initializer(onnx_model, node.input[1])
    except penultimate.UncheckableError:
        return None
    convs = [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    exact = [name for name, m in convs if tuple(m.weight.shape) == weight.shape
             and np.array_equal(m.weight.detach().numpy().astype(weight.dtype), weight)]
    return exact[0] if exact else _scaled_match(convs, weight)


def _scaled_match(convs: list[tuple[str, Any]], weight: np.ndarray, rtol: float = 1e-4) -> str | None:
    """The Conv2d whose weight times a per-output-channel factor is ``weight``, else None."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
    for name, module in convs:
        if tuple(module.weight.shape) != weight.shape:
            continue
        trained = module.weight.detach().double().numpy().reshape(rows.shape)
        energy = (trained * trained).sum(axis=1)
        if not (energy > 0).all():
            continue
        factor = (rows * trained).sum(axis=1) / energy
        if np.linalg.norm(rows - factor[:, None] * trained) <= rtol * np.linalg.norm(rows):
            return name
    return None
