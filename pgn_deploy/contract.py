"""The contract every part of pgn-deploy builds on.

* Output names: ``pgn_<label>_p<format(p, "g")>`` (``pgn_uni_p0.5``, ``pgn_oh_p1``), plus the
  optional ``pred`` (argmax class map, int32, N x H x W) and the baselines ``msp``
  (1 - max softmax) and ``entropy`` (softmax entropy, nats), float32 N x 1 x H x W like the maps.
* Metadata: one JSON document under the ONNX ``metadata_props`` key ``pgn_deploy``
  (:class:`Metadata`). The runtime, the engine builder and the C++ library read it and nothing
  else.
* Errors: :class:`PGNError` and its subclasses. CLIs print one line and exit non-zero.
* Files: :func:`atomic_write` writes to a temporary file beside the target and renames it.

This module imports neither torch nor the exporter: a deployment host has only numpy, onnx and
onnxruntime.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

METADATA_KEY = "pgn_deploy"
FORMAT_VERSION = 1

FORMS = ("paper", "exact")
LABELS = ("uni", "oh", "gt")
RESOLUTIONS = ("feature", "output")
UPSAMPLES = ("auto", "matmul", "resize")
LAYERS = ("last", "penultimate")
PENULTIMATE_SUFFIX = "_penultimate"
PRED = "pred"
BASELINES = ("msp", "entropy")
GT_INPUT = "pgn_gt"
NORM_SUFFIX = "_norm"
OOD_MASK = "ood_mask"
OOD_THRESHOLD_INPUT = "ood_threshold"
INPUT_FORMATS = ("float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr")


# --------------------------------------------------------------------------- errors
class PGNError(Exception):
    """Base class of every error pgn-deploy raises on purpose (one clear line of text)."""


class BadInputError(PGNError):
    """An argument, file or array the caller gave is wrong (shape, dtype, value, path)."""


class ModelLoadError(BadInputError):
    """A checkpoint or ONNX file is missing, truncated, corrupt or of an unknown kind."""


class UnsupportedModelError(PGNError):
    """The model is valid but cannot be grafted (no classifier head, not segmentation, ...)."""


class MissingMetadataError(PGNError):
    """An ONNX model carries no ``pgn_deploy`` metadata: it was not made by ``pgn-export``."""


class BackendUnavailableError(PGNError):
    """A backend needs a package or hardware that is not present (the message names it)."""


class ArtifactExistsError(PGNError):
    """An output file exists and ``force`` was not given."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SHAPE = re.compile(r"\s*\d+(\s*[xX]\s*\d+)*\s*")


def parse_shape(text: str | Iterable[int], rank: int | None = None, what: str = "shape") -> tuple[int, ...]:
    """``"1x3x512x1024"`` (or ints) -> ``(1, 3, 512, 1024)``: the one shape syntax of every command.

    Sizes are positive integers joined by ``x``; ``rank`` (4 for ``NxCxHxW``, 2 for ``HxW``) is
    enforced when given. Raises :class:`BadInputError` naming ``what`` otherwise.
    """
    example = {2: "512x1024", 4: "1x3x512x1024"}.get(rank or 0, "1x3x512x1024")
    if isinstance(text, str):
        if not _SHAPE.fullmatch(text):
            raise BadInputError(f"{what} {text!r} is not a shape like {example}")
        dims = tuple(int(v) for v in re.split(r"\s*[xX]\s*", text.strip()))
    else:
        dims = tuple(int(v) for v in text)
    if rank is not None and len(dims) != rank:
        raise BadInputError(f"{what} {'x'.join(map(str, dims))} must have {rank} sizes, like {example}")
    if not dims or min(dims) <= 0:
        raise BadInputError(f"{what} {'x'.join(map(str, dims))} must have sizes >= 1")
    return dims


# Every optional dependency and the extra of pyproject.toml that installs it: the one place
# where that pairing is written (``pip install 'pgn-deploy[EXTRA]'``).
EXTRAS = {
    "torch": "export", "torchvision": "export", "onnxscript": "export", "onnx_graphsurgeon": "export",
    "polygraphy": "export", "onnxconverter_common": "export",
    "modelopt": "precision", "onnxslim": "precision",
    "tensorrt": "trt", "cuda": "trt",
    "tritonclient": "triton", "pytriton": "serve",
    "sklearn": "eval", "matplotlib": "eval", "h5py": "eval",
    "ray": "mine", "pyarrow": "mine",
}


def require(module: str, purpose: str) -> Any:
    """Import an optional ``module`` on first use; a missing one raises a PGNError naming its extra.

    ``module`` belongs to a package listed in :data:`EXTRAS` (else a core one); ``purpose`` says what needs it
    (``"pgn-build"``, ``"plotting curves"``) and starts the message.
    """
    import importlib

    package = module.split(".")[0]
    extra = EXTRAS.get(package)
    fix = f"pip install 'pgn-deploy[{extra}]'" if extra else "pip install pgn-deploy (a core dependency is missing)"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{purpose} needs the Python package '{package}', which is not installed ({exc}); install it with: {fix}"
        ) from None


# --------------------------------------------------------------------------- names
# Which classifier weights a map is the gradient with respect to: the checkpoint's trained ones
# (an exporter's fold of a BatchNorm or scale undone) or the ones stored in the graph.
WEIGHTS = ("trained", "graph")


def check_weights(weights: str) -> str:
    """``weights`` if it is one of :data:`WEIGHTS`, else a :class:`BadInputError`."""
    if weights not in WEIGHTS:
        raise BadInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    return weights


def format_p(p: float) -> str:
    """How p is written in output names: Python's ``format(p, "g")`` (0.5 -> '0.5', 1.0 -> '1')."""
    return format(float(p), "g")


def pgn_output_name(label: str, p: float, layer: str = "last") -> str:
    """Output name of the PGN map for ``label`` and exponent ``p``: ``pgn_<label>_p<p>`` for the
    classifier (``layer="last"``), ``pgn_<label>_p<p>_penultimate`` for the conv before it."""
    return f"pgn_{label}_p{format_p(p)}" + (PENULTIMATE_SUFFIX if layer == "penultimate" else "")


def parse_map_name(name: str) -> tuple[str, float, str] | None:
    """``(label, p, layer)`` of any PGN map name (both layers); ``None`` for other names."""
    layer = "penultimate" if name.endswith(PENULTIMATE_SUFFIX) else "last"
    parsed = parse_pgn_output_name(name[: -len(PENULTIMATE_SUFFIX)] if layer == "penultimate" else name)
    return None if parsed is None else (*parsed, layer)


def parse_pgn_output_name(name: str) -> tuple[str, float] | None:
    """Inverse of :func:`pgn_output_name` for the last layer's maps; ``None`` for a name that
    is not one (penultimate maps included: :func:`parse_map_name` reads those)."""
    if not name.startswith("pgn_"):
        return None
    label, _, p_text = name[4:].partition("_p")
    if label not in LABELS or not p_text:
        return None
    try:
        p = float(p_text)
    except ValueError:
        return None
    return label, p


# --------------------------------------------------------------------------- spec
@dataclasses.dataclass(frozen=True)
class PGNSpec:
    """What to graft: exponents ``p``, auxiliary ``labels``, the closed ``form`` and options.

    * ``form="paper"``: the published class factor (eqs. 7, 8); ``"exact"``: the true loss
      gradient (matches autograd); label ``gt`` exists only for ``exact``.
    * ``bias``: include the classifier bias in the parameter set.
    * ``resolution="feature"``: gradient at the classifier's resolution, map resized like the
      logits; ``"output"``: exact gradient per output pixel (softmax and features resized first).
    * ``keep_feature_size``: do not resize the maps to the logits' output size.
    * ``upsample``: how resolution ``feature`` maps reach the output size: ``"matmul"``, two
      MatMuls with bilinear interpolation matrices when the model resizes its logits with one
      linear ``Resize`` (else as ``"resize"``); ``"resize"``, a copy of the model's own ops;
      ``"auto"`` (default), matmul when the classifier map has at most 64 rows at the model's
      nominal input size (the MatMul's cost grows with
      them, the Resize's does not). The grafted model's metadata records what was used.
    * ``layers``: ``"last"``, the gradient w.r.t. the classifier; ``"penultimate"``, w.r.t. the
      conv before it (maps ``pgn_<label>_p<p>_penultimate``, resolution ``feature`` only;
      ``docs/penultimate.md``). Metadata without the field means ``("last",)``.
    """

    p: tuple[float, ...] = (0.5,)
    labels: tuple[str, ...] = ("uni",)
    form: str = "paper"
    bias: bool = False
    resolution: str = "feature"
    keep_feature_size: bool = False
    pred: bool = False
    baselines: bool = False
    upsample: str = "auto"
    layers: tuple[str, ...] = ("last",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", tuple(float(p) for p in self.p))
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.layers or len(set(self.layers)) != len(self.layers) or not set(self.layers) <= set(LAYERS):
            raise BadInputError(f"layers {list(self.layers)} must be distinct names from {', '.join(LAYERS)}")
        object.__setattr__(self, "layers", tuple(layer for layer in LAYERS if layer in self.layers))
        if "penultimate" in self.layers and self.resolution == "output":
            raise BadInputError("penultimate-layer maps are computed at the classifier's resolution; "
                                "use --resolution feature")
        if not self.p:
            raise BadInputError("at least one p is needed")
        for p in self.p:
            if not (math.isfinite(p) and p > 0):
                raise BadInputError(f"p must be a finite number > 0, got {p:g}")
        if not self.labels:
            raise BadInputError("at least one label is needed")
        for label in self.labels:
            if label not in LABELS:
                raise BadInputError(f"unknown label {label!r}; choose from {', '.join(LABELS)}")
        if self.form not in FORMS:
            raise BadInputError(f"unknown form {self.form!r}; choose from {', '.join(FORMS)}")
        if "gt" in self.labels and self.form != "exact":
            raise BadInputError("label 'gt' needs --form exact (the paper form has no gt label)")
        if self.resolution not in RESOLUTIONS:
            raise BadInputError(
                f"unknown resolution {self.resolution!r}; choose from {', '.join(RESOLUTIONS)}"
            )
        if self.upsample not in UPSAMPLES:
            raise BadInputError(f"unknown upsample {self.upsample!r}; choose from {', '.join(UPSAMPLES)}")
        if self.resolution == "output" and self.keep_feature_size:
            raise BadInputError("--keep-feature-size contradicts --resolution output")
        if len(set(self.p)) != len(self.p) or len(set(self.labels)) != len(self.labels):
            raise BadInputError("p values and labels must not repeat")

    @property
    def map_names(self) -> list[str]:
        """Names of every PGN output: layers outer (last first), then labels, p inner."""
        return [pgn_output_name(label, p, layer) for layer in self.layers for label in self.labels for p in self.p]

    def to_json(self) -> dict[str, Any]:
        """This object as a JSON-ready dict (the form stored in the model's metadata); ``layers`` only
        when it is not the default ``("last",)``, so a last-layer model's metadata reads as before."""
        data = dataclasses.asdict(self) | {"p": list(self.p), "labels": list(self.labels)}
        data.pop("layers")
        return data | ({"layers": list(self.layers)} if self.layers != ("last",) else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PGNSpec:
        """Rebuild from :meth:`to_json`'s dict; missing optional keys take their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        # metadata written before ``upsample`` existed: the maps went through the model's ops
        return cls(**({"upsample": "resize"} | {k: v for k, v in data.items() if k in fields}))


# --------------------------------------------------------------------------- metadata
LABEL_ALIASES = {"both": ("uni", "oh")}


def make_spec(
    p: float | Sequence[float] = 0.5,
    labels: str | Sequence[str] = "uni",
    form: str = "paper",
    bias: bool = False,
    resolution: str = "feature",
    keep_feature_size: bool = False,
    pred: bool = False,
    baselines: bool = False,
    upsample: str = "auto",
    layers: str | Sequence[str] = "last",
) -> PGNSpec:
    """A validated :class:`PGNSpec`; ``p`` and ``labels`` may be single values, ``"both"`` is
    ``uni`` and ``oh``; ``layers`` one of ``last``/``penultimate`` or several, ``"both"`` is both."""
    p_values = [p] if isinstance(p, (int, float)) else list(p)
    label_list = [labels] if isinstance(labels, str) else list(labels)
    expanded = [name for label in label_list for name in LABEL_ALIASES.get(label, (label,))]
    return PGNSpec(
        p=tuple(dict.fromkeys(float(v) for v in p_values)),
        labels=tuple(dict.fromkeys(expanded)),
        form=form,
        bias=bias,
        resolution=resolution,
        keep_feature_size=keep_feature_size,
        pred=pred,
        baselines=baselines,
        upsample=upsample,
        layers=_layers(layers),
    )


def _layers(layers: str | Sequence[str]) -> tuple[str, ...]:
    """``layers`` as a tuple of names, ``"both"`` expanded."""
    names = [layers] if isinstance(layers, str) else list(layers)
    return tuple(dict.fromkeys(n for name in names for n in (LAYERS if name == "both" else (name,))))


@dataclasses.dataclass
class InputInfo:
    """How the graph input is fed.

    ``layout`` is ``"NCHW"``; ``channel_order`` ``"RGB"`` or ``"BGR"``; pixel values are
    ``(uint8 / scale - mean) / std`` per channel; ``size`` is (H, W) the model was exported at
    (``None``: any size), ``resize`` whether the runtime resizes images to ``size``.
    ``assumed_normalization``: ``mean``/``std``/``channel_order`` are defaults assumed by
    pgn-export (ImageNet statistics for 3 channels, else mean 0, std 1), not read from the
    checkpoint.
    ``format``: what the graph input takes. ``"float-nchw"``: the preprocessed float tensor
    above. ``"uint8-nhwc-rgb"``/``"uint8-nhwc-bgr"``: camera frames as they come (uint8
    N x H x W x 3 in that channel order, ``layout`` ``"NHWC"``); the graph casts, reorders the
    channels to ``channel_order``, normalizes and transposes (:mod:`pgn_deploy.graft.preprocess`).
    """

    name: str = "input"
    layout: str = "NCHW"
    channel_order: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size: tuple[int, int] | None = None
    resize: bool = False
    dynamic_batch: bool = True
    dynamic_size: bool = True
    assumed_normalization: bool = False
    format: str = "float-nchw"

    @property
    def uint8(self) -> bool:
        """Whether the graph takes uint8 N x H x W x 3 frames (preprocessing inside the graph)."""
        return self.format != "float-nchw"

    @property
    def frame_order(self) -> str:
        """Channel order of the uint8 frames the graph takes (``RGB``/``BGR``)."""
        return self.format.rsplit("-", 1)[1].upper() if self.uint8 else self.channel_order

    def to_json(self) -> dict[str, Any]:
        """This object as a JSON-ready dict (the form stored in the model's metadata)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputInfo:
        """Rebuild from :meth:`to_json`'s dict; missing optional keys take their defaults."""
        d = dict(data)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        d["size"] = tuple(d["size"]) if d.get("size") else None
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclasses.dataclass
class HeadInfo:
    """The classifier head the graft found.

    ``conv_nodes``: the 1x1 Conv node(s) (several for a multi-branch head), ``features``: their
    input tensors (psi), ``logits``: the tensor the graft treated as the logits (after the
    model's own resize), ``head_logits``: the summed classifier output at feature resolution,
    ``resize``: ``"none"`` or the interpolation mode mirrored for the maps (PyTorch names:
    ``bilinear``, ``nearest``, ``bicubic``; several resizes in a row are joined by ``+``),
    ``align_corners``: that resize's ``align_corners``; ``feature_resize``: per branch,
    ``"none"`` or the mode of the resize the model applies to that branch's conv output before
    the sum (then ``features[i]`` is brought to ``head_logits``' size the same way).
    ``kind``: ``"conv"`` (Conv classifiers) or ``"linear"`` (a per-token MatMul/Gemm over the
    last axis, ``features`` N x T x E); ``kernel``/``pads``/``dilations``: per branch, the
    classifier's kernel size, ONNX pads and dilations (all three empty when every classifier is
    a 1x1 conv without padding or a per-token head); ``affine``: the per-class affine nodes between the classifier and
    the logits; ``class_scale``: the per-class factor ``a`` of ``g' = a * g`` (``None``: 1);
    ``head_logits`` is then the logits after that affine (what the softmax sees);
    ``weights``: ``"trained"`` (the maps are the gradient w.r.t. the checkpoint's classifier
    weights, an exporter's BatchNorm fold undone) or ``"graph"`` (w.r.t. the weights stored in
    the graph); ``weights_note``: why, when that is not certain; ``passed``: the
    Softmax/LogSoftmax/ArgMax nodes after the logits that the graft looked through;
    ``layout``: the layout ops (Transpose/Reshape/Slice...) mirrored onto the maps.
    """

    conv_nodes: list[str]
    features: list[str]
    logits: str
    head_logits: str
    logits_output: str
    resize: str = "none"
    align_corners: bool = False
    feature_resize: list[str] = dataclasses.field(default_factory=list)
    kind: str = "conv"
    kernel: list[list[int]] = dataclasses.field(default_factory=list)
    pads: list[list[int]] = dataclasses.field(default_factory=list)
    dilations: list[list[int]] = dataclasses.field(default_factory=list)
    affine: list[str] = dataclasses.field(default_factory=list)
    class_scale: list[float] | None = None
    weights: str = "graph"
    weights_note: str = ""
    passed: list[str] = dataclasses.field(default_factory=list)
    layout: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict; those from ``kind`` on only where they differ from their
        defaults (a plain 1x1 head's metadata stays as readers before them wrote it)."""
        data = dataclasses.asdict(self)
        defaults = HeadInfo("", "", "", "", "")  # type: ignore[arg-type]
        optional = [f.name for f in dataclasses.fields(self)][8:]
        return {k: v for k, v in data.items() if k not in optional or v != getattr(defaults, k)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadInfo:
        """Rebuild from :meth:`to_json`'s dict; missing optional keys take their defaults."""
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclasses.dataclass
class Metadata:
    """The ``pgn_deploy`` metadata document of a grafted model (format version 1).

    ``original_outputs``: the model's own outputs, unchanged; ``pgn_outputs``: the PGN maps
    (float32, N x 1 x H x W); ``pred``: name of the argmax output or ``None``; ``baselines``: the
    baseline map outputs; ``calibration``: per-map statistics from ``pgn-calibrate``
    (``{name: {"q": {"0.5": v, ...}, "max": v, "threshold": v, "threshold_rule": "q0.995"}}``,
    see :mod:`pgn_deploy.runtime.stats`) or ``None``; ``precision``: the network's
    precision (``fp32``, ``fp16``, ``bf16``, ``int8``, ``fp8``); the PGN subgraph is always float32;
    ``quantization``: for ``int8``/``fp8`` models, how they were quantized (calibration method,
    image count and sha256, what was excluded; :mod:`pgn_deploy.engines.quantize`), else ``None``.
    ``normalized``: map -> name of its in-graph percentile-rank output (``<map>_norm``, float32
    N x 1 x H x W in [0, 1]); ``ood_mask``: ``None`` or ``{"output", "map", "threshold_input",
    "default", "rule"}``: a uint8 N x 1 x H x W output ``<map>_norm >= threshold`` whose
    threshold is an optional float32 scalar graph input (default ``default``, a rank).
    ``dropped_outputs``: outputs removed by ``--outputs`` (the metadata still names them).
    ``penultimate``: with penultimate-layer maps, the conv they differentiate and how
    (``conv``, ``activation``, ``batch_norm``: ``kept``/``folded``/``none``, ``weights``:
    ``trained``/``graph``, ``scale_from``: ``graph``/``exporter``/``none``; ``inputs``/
    ``pre_activation``: the graph tensors psi2 and z; ``scale``: the per-channel factor on
    ``s``, ``None`` for 1; ``negative_slope`` (LeakyRelu) or ``bounds`` (Relu/Clip: where the
    derivative is 1)), else ``None``.
    """

    spec: PGNSpec
    head: HeadInfo
    num_classes: int
    input: InputInfo
    original_outputs: list[str]
    pgn_outputs: list[str]
    pred: str | None = None
    baselines: list[str] = dataclasses.field(default_factory=list)
    class_names: list[str] | None = None
    calibration: dict[str, Any] | None = None
    precision: str = "fp32"
    gt_input: str | None = None
    quantization: dict[str, Any] | None = None
    penultimate: dict[str, Any] | None = None
    producer: str = ""
    format_version: int = FORMAT_VERSION
    normalized: dict[str, str] = dataclasses.field(default_factory=dict)
    ood_mask: dict[str, Any] | None = None
    dropped_outputs: list[str] = dataclasses.field(default_factory=list)

    @property
    def score_outputs(self) -> list[str]:
        """Every per-pixel score map: the PGN maps then the baselines."""
        return [*self.pgn_outputs, *self.baselines]

    def to_json(self) -> dict[str, Any]:
        """This object as a JSON-ready dict (the form stored in the model's metadata)."""
        return {
            "format_version": self.format_version,
            "producer": self.producer or f"pgn_deploy {_version()}",
            "spec": self.spec.to_json(),
            "head": self.head.to_json(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input": self.input.to_json(),
            "outputs": {
                "original": self.original_outputs,
                "pgn": self.pgn_outputs,
                "pred": self.pred,
                "baselines": self.baselines,
                "normalized": self.normalized,
                "ood_mask": self.ood_mask,
                "dropped": self.dropped_outputs,
            },
            "calibration": self.calibration,
            "precision": self.precision,
            "gt_input": self.gt_input,
            **({"quantization": self.quantization} if self.quantization is not None else {}),
            **({"penultimate": self.penultimate} if self.penultimate is not None else {}),
        }

    def dumps(self) -> str:
        """The metadata as the JSON text stored under the ``pgn_deploy`` key."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metadata:
        """Rebuild from :meth:`to_json`'s dict; missing optional keys take their defaults."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise MissingMetadataError(
                f"pgn_deploy metadata format {version!r} is not supported (expected "
                f"{FORMAT_VERSION}); re-export the model with this version of pgn-export"
            )
        outputs = data["outputs"]
        return cls(
            spec=PGNSpec.from_json(data["spec"]),
            head=HeadInfo.from_json(data["head"]),
            num_classes=int(data["num_classes"]),
            input=InputInfo.from_json(data["input"]),
            original_outputs=list(outputs["original"]),
            pgn_outputs=list(outputs["pgn"]),
            pred=outputs.get("pred"),
            baselines=list(outputs.get("baselines") or []),
            class_names=data.get("class_names"),
            calibration=data.get("calibration"),
            precision=data.get("precision", "fp32"),
            gt_input=data.get("gt_input"),
            quantization=data.get("quantization"),
            penultimate=data.get("penultimate"),
            producer=data.get("producer", ""),
            normalized=dict(outputs.get("normalized") or {}),
            ood_mask=outputs.get("ood_mask"),
            dropped_outputs=list(outputs.get("dropped") or []),
        )

    @classmethod
    def loads(cls, text: str) -> Metadata:
        """Parse :meth:`dumps`' text; a malformed document raises :class:`MissingMetadataError`."""
        try:
            return cls.from_json(json.loads(text))
        except (KeyError, TypeError, ValueError) as exc:
            raise MissingMetadataError(f"the pgn_deploy metadata is malformed: {exc}") from None


def _version() -> str:
    from pgn_deploy._version import __version__

    return __version__


def read_metadata(model: Any) -> Metadata:
    """Metadata of an ``onnx.ModelProto`` or of an ONNX file (path); raises a PGNError if absent."""
    import onnx

    source = str(model) if not isinstance(model, onnx.ModelProto) else "the model"
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model, load_weights=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return Metadata.loads(prop.value)
    raise MissingMetadataError(
        f"{source} has no pgn_deploy metadata: it is not a grafted model; run pgn-export on it first"
    )


def write_metadata(model: Any, meta: Metadata) -> None:
    """Set (or replace) the ``pgn_deploy`` metadata entry of an ``onnx.ModelProto`` in place."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.dumps()


def load_onnx(path: str | os.PathLike[str], load_weights: bool = True) -> Any:
    """Load an ONNX file with a clear PGNError for a missing, truncated or corrupt file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several kinds
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- files
def process_umask() -> int:
    """The process umask, read without changing it (Linux's ``/proc/self/status``).

    Elsewhere it is read by setting and restoring it, which is safe only while no other thread
    creates files; that fallback runs once per call, never at import time.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_path(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Validate a target file path before any work: its folder exists, it is not overwritten
    unless ``force``. Returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadInputError(f"{path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder, expected a file path")
    if path.exists() and not force:
        raise ArtifactExistsError(f"{path} exists; pass --force to overwrite it")
    return path


_TEMP_PREFIX = "pgn"
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile on a full disk


def _temp_name_pattern(path: Path) -> re.Pattern[str]:
    """The temporary files :func:`atomic_write` makes for ``path``: ``.<name>.pgn<pid>-XXXX.tmp``."""
    return re.compile(re.escape(f".{path.name}.{_TEMP_PREFIX}") + r"(\d+)-[^/]+\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of earlier :func:`atomic_write` calls for ``path`` whose
    process is gone (killed mid-write); returns them. Files of running writers are kept."""
    path = Path(path)
    pattern = _temp_name_pattern(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.{_TEMP_PREFIX}*.tmp"))
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and int(match[1]) != os.getpid() and not _pid_alive(int(match[1])):
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError:
                continue
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters ``*?[`` taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def write_error(path: Path, exc: OSError) -> PGNError:
    """One line for an ``OSError`` while writing ``path``: a full disk is said to be full."""
    if exc.errno in _DISK_FULL_ERRNOS or _SHORT_WRITE.search(str(exc)):
        return PGNError(f"{path}: the disk is full (no space left on the device holding {path.parent}); "
                        "nothing was written")
    return PGNError(f"{path}: cannot write it: {exc.strerror or first_line(exc)}")


def _place_without_overwrite(tmp_path: Path, path: Path) -> None:
    """Give ``tmp_path``'s file the name ``path`` only if no file has it (no check-then-act race):
    a hard link fails when ``path`` exists; where links are not supported, ``path`` is reserved
    with ``O_EXCL`` first and the finished file renamed over the reservation."""
    try:
        os.link(tmp_path, path)
        return
    except FileExistsError:
        raise ArtifactExistsError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise ArtifactExistsError(f"{path} exists; pass --force to overwrite it") from None
    os.replace(tmp_path, path)


def check_not_input(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """:class:`BadInputError` when ``output`` is one of ``inputs`` (the same path, or the same
    file through a symbolic or hard link): no command writes over what it reads, ``force`` or not."""
    out = Path(output)
    for source in inputs:
        src = Path(source)
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            try:
                same = os.path.samefile(out, src)
            except OSError:
                same = False
        if same:
            raise BadInputError(f"{out}: is the input {src}; choose another output path (--force never "
                                "overwrites an input)")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], force: bool = False) -> Path:
    """Write a file through ``write(tmp_path)`` into a temporary file beside ``path``, then rename.

    A failure leaves no partial file and keeps an existing ``path`` untouched; an existing
    ``path`` is replaced only with ``force``. Without ``force`` the final step cannot overwrite
    a file that appeared meanwhile (two writers: one wins, the other gets
    :class:`ArtifactExistsError`). The file gets the mode the umask gives (0644 by default).
    Temporary files that earlier, killed writers left for ``path`` are removed first. A full
    disk raises :class:`PGNError` naming the file and saying the disk is full.
    """
    path = check_output_path(path, force)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TEMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            write(tmp_path)
        except OSError as exc:
            raise write_error(path, exc) from exc
        os.chmod(tmp_path, 0o666 & ~process_umask())  # mkstemp makes 0600; give the usual file mode
        if force:
            os.replace(tmp_path, path)
        else:
            _place_without_overwrite(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    """:func:`atomic_write` for a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), force)


def save_onnx(model: Any, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Save an ``onnx.ModelProto`` atomically (single file; > 2 GB models are refused)."""
    import onnx

    if model.ByteSize() >= 2**31 - 1:
        raise UnsupportedModelError("models over 2 GB (external data) are not supported yet")
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)), force)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unique(items: Iterable[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))
