"""``export_model``: checkpoint in, one grafted ``.pgn.onnx`` file out (the API of ``pgn-export``).

Order of work: every argument is validated first (the PGN spec, the input shape, the output
path), then the checkpoint is loaded (:mod:`pgn_deploy.export.load`), one forward pass checks
that the network is a segmentation network, the plain model is exported
(:func:`~pgn_deploy.export.onnx_export.export_onnx`), grafted
(:func:`~pgn_deploy.graft.attach.graft`), run once on ONNX Runtime's CPU provider at the traced
shape (:func:`~pgn_deploy.export.probe.probe_grafted`: a file that does not run, or whose maps
are not finite there, is never written) and saved atomically. A bad argument therefore fails
in milliseconds and leaves no file behind.

When no exporter is named and the default one fails, the other one is tried (the report says
which one worked); ``static_shape`` exports a fixed N x C x H x W for models whose dynamic
export fails (adaptive pooling whose output does not divide the input, ...). ``weights``:
``trained`` (default) grafts the gradient w.r.t. the checkpoint's classifier weights, undoing
a BatchNorm or scale the exporter folded into them (:mod:`pgn_deploy.export.trained_weights`);
``graph`` w.r.t. the weights stored in the graph. The metadata records ``trained`` when a fold
was undone, else ``graph`` (the graph's weights are then the trained ones unless its note says
otherwise: no layer of the checkpoint matches, or an ONNX file's fold cannot be undone).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.contract import (
    BadInputError,
    HeadInfo,
    InputInfo,
    Metadata,
    ModelLoadError,
    PGNSpec,
    UnsupportedModelError,
    check_not_input,
    check_output_path,
    check_weights,
    parse_shape,
    read_metadata,
    require,
    save_onnx,
)
from pgn_deploy.export.onnx_export import EXPORTERS

DEFAULT_EXPORTER = "torchscript"
"""``torch.onnx.export(dynamo=False)``: on the torchvision and transformers test models it is
10-20x faster than the dynamo exporter with the same accuracy, and keeps the batch dynamic
where dynamo specializes a batch of 1 (Segformer)."""
DEFAULT_SIZE = (512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class ExportResult:
    """The written file, the metadata grafted into it, the PyTorch exporter that produced the
    graph (``None`` for an ONNX checkpoint) and notes for the user (one line each)."""

    path: Path
    metadata: Metadata
    exporter: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_text(self) -> str:
        """What ``pgn-export`` prints: the file, the head, the outputs, the input and the calibration."""
        meta = self.metadata
        outputs = [*meta.original_outputs, *meta.pgn_outputs,
                   *([meta.pred] if meta.pred else []), *meta.baselines,
                   *(meta.normalized[m] for m in meta.score_outputs if m in meta.normalized),
                   *([meta.ood_mask["output"]] if meta.ood_mask else [])]
        kernel = "x".join(map(str, meta.head.kernel[0])) if meta.head.kernel else "1x1"
        lines = [f"wrote {self.path}",
                 f"  head: {', '.join(meta.head.conv_nodes)} ({meta.head.kind}, {kernel}, {meta.num_classes} classes; "
                 f"gradient w.r.t. the {meta.head.weights} weights)"]
        if self.exporter:
            lines.append(f"  exporter: {self.exporter}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  outputs: {', '.join(outputs)}", f"  input: {meta.input.name} ({meta.input.format})"]
        if meta.calibration:
            rule = next(iter(meta.calibration.values())).get("threshold_rule")
            lines.append(f"  calibrated: {len(meta.calibration)} maps, default thresholds = {rule} of "
                         "in-distribution pixels")
        if meta.ood_mask:
            lines.append(f"  ood_mask: {meta.ood_mask['map']}_norm >= ood_threshold "
                         f"(default {meta.ood_mask['default']:g})")
        if meta.input.assumed_normalization:
            lines.append("  note: input mean/std are assumed defaults (the checkpoint has no 'input' dict)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {"path": str(self.path), "exporter": self.exporter, "notes": self.notes,
                "metadata": self.metadata.to_json()}




def default_output_path(checkpoint: str | Path) -> Path:
    """``<stem>.pgn.onnx`` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.pgn.onnx")


def export_model(
    checkpoint: str | Path,
    output: str | Path | None = None,
    spec: PGNSpec | None = None,
    *,
    head: str | None = None,
    input_shape: str | Sequence[int] | None = None,
    opset: int | None = None,
    exporter: str | None = None,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | str | None = None,
    trust_pickle: bool = False,
    precision: str = "fp32",
    calib: Sequence[Any] | None = None,
    calib_max: int | None = None,
    calib_method: str = "max",
    int8_keep_float: str = "measured",
    force: bool = False,
    normalize: bool = False,
    input_format: str = "float-nchw",
    outputs: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: str = "trained",
    static_shape: bool = False,
) -> ExportResult:
    """Export ``checkpoint`` with the PGN maps grafted in; returns the path and the metadata.

    ``checkpoint``: an SDK checkpoint, a state_dict (with ``arch``), a TorchScript archive, an
    ONNX file or (with ``trust_pickle``) a pickled module; see :mod:`pgn_deploy.export.load`.
    ``output``: default ``<stem>.pgn.onnx`` beside the checkpoint; never overwritten without
    ``force``. ``spec``: the maps to graft, one :class:`PGNSpec` (default ``PGNSpec()``: PGN_uni at
    p = 0.5; :func:`pgn_deploy.contract.make_spec` builds one from CLI-style values); with
    penultimate maps a PyTorch model's folded BatchNorm factors go to the graft
    (:mod:`pgn_deploy.export.bn_fold`). ``head``: a node of the
    classifier head (default: found). ``input_shape``: ``N x C x H x W`` of the traced
    example (default: the checkpoint's ``input.size``, else 512 x 512; the exported model keeps
    batch and size dynamic). ``opset``/``exporter``: passed to the PyTorch exporter
    (``"torchscript"`` by default, or ``"dynamo"``). ``arch_kwargs``: a dict or JSON text.
    ``precision``: ``fp32``, or ``fp16``/``bf16`` for a network in half precision with the PGN
    subgraph and the outputs kept float32 (:func:`pgn_deploy.engines.precision.convert_model`),
    or ``int8``/``fp8`` for a Q/DQ network calibrated on the ``calib`` images (at most
    ``calib_max``, ``calib_method`` ``max`` or ``entropy``, ``int8_keep_float`` what stays
    float32 besides the PGN subgraph: ``measured``, ``classifier`` or ``none``;
    :func:`pgn_deploy.engines.quantize.quantize_model`). A ``checkpoint`` that is already a
    grafted ``.pgn.onnx`` is converted to ``precision`` as it is (the PGN arguments are not used).
    ``calib`` also serves as the in-distribution images (arrays or paths, see
    :func:`pgn_deploy.runtime.calibrate.measure_calibration`) measured with the exported model
    (after the precision conversion) and stored as its calibration. ``normalize`` (needs
    ``calib``), ``input_format`` and ``outputs``: the deployment steps of
    :func:`pgn_deploy.graft.deploy.prepare_deployment`. ``mean``/``std``: the input
    normalization (3 values each), instead of the checkpoint's ``input`` dict or the assumed
    ImageNet statistics.
    ``weights``/``static_shape``: see the module doc.
    """
    from pgn_deploy.engines.precision import QUANT_PRECISIONS, check_calibration_use
    from pgn_deploy.graft.preprocess import check_input_format

    check_calibration_use(precision, calib)
    if precision in QUANT_PRECISIONS:
        from pgn_deploy.engines.quantize import check_keep_float

        check_keep_float(int8_keep_float)
    check_weights(weights)
    check_input_format(input_format)
    if normalize and not calib:
        raise BadInputError("--normalize needs --calib IMAGES (in-distribution images to take the quantiles from)")
    normalization = _given_normalization(mean, std)
    if _is_grafted_onnx(checkpoint):
        if precision == "fp32":
            raise UnsupportedModelError(f"{checkpoint} is already grafted (it has pgn_deploy metadata); graft the "
                                        "original, or give --precision to convert it")
        if precision not in QUANT_PRECISIONS and (calib or normalize):
            raise BadInputError(f"{checkpoint} is already grafted: calibrate it with pgn-calibrate MODEL IMAGES -o OUT")
        from pgn_deploy.engines.precision import convert_file

        source = Path(checkpoint)
        stem = source.name.removesuffix(".onnx").removesuffix(".pgn")
        output = Path(output) if output is not None else source.with_name(f"{stem}.{precision}.pgn.onnx")
        check_not_input(output, source)
        path = convert_file(checkpoint, output, precision, calib, calib_max, calib_method, int8_keep_float,
                            force=force)
        return ExportResult(path=path, metadata=read_metadata(path))
    spec = spec if spec is not None else PGNSpec()
    shape = None if input_shape is None else parse_shape(input_shape, 4, "input shape")
    kwargs = parse_arch_kwargs(arch_kwargs)
    if opset is not None and opset < 1:
        raise BadInputError(f"opset must be a positive ONNX opset version, got {opset}")
    if exporter is not None and exporter not in EXPORTERS:
        raise BadInputError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelLoadError(f"{checkpoint}: no such file")
    output = output if output is not None else default_output_path(checkpoint)
    check_not_input(output, checkpoint)
    output = check_output_path(output, force)

    from pgn_deploy.export.probe import probe_grafted
    from pgn_deploy.graft.attach import graft

    loaded, onnx_model, info, probe_shape, used, notes = _plain_onnx(
        checkpoint, arch, kwargs, trust_pickle, shape, exporter, opset, static_shape)
    if normalization is not None:
        info = dataclasses.replace(info, mean=normalization[0], std=normalization[1], assumed_normalization=False)
    folded, weights_used, weights_note = _trained_weights(loaded, onnx_model, head, weights)
    if weights_note:
        notes.append(weights_note)
    folds = []
    if "penultimate" in spec.layers and weights == "trained" and loaded.module is not None:
        from pgn_deploy.export.bn_fold import batch_norm_folds

        folds = batch_norm_folds(loaded.module)
    grafted = graft(onnx_model, spec, head=head, input_info=info, class_names=loaded.class_names,
                    folded_scale=folded, weights=weights_used, weights_note=weights_note, bn_folds=folds)
    probe_grafted(grafted, probe_shape)
    if precision in QUANT_PRECISIONS:
        from pgn_deploy.engines.quantize import quantize_model, read_calibration

        calibration = read_calibration(read_metadata(grafted), list(calib or []), calib_max)
        grafted = quantize_model(grafted, calibration, precision, calib_method, int8_keep_float)
    elif precision != "fp32":
        from pgn_deploy.engines.precision import convert_model

        grafted = convert_model(grafted, precision)
    if calib:
        grafted = _calibrated(grafted, calib, output)
    from pgn_deploy.graft.deploy import prepare_deployment

    grafted = prepare_deployment(grafted, normalize=normalize, input_format=input_format, outputs=outputs)
    path = save_onnx(grafted, output, force=force)
    return ExportResult(path=path, metadata=read_metadata(grafted), exporter=used, notes=notes)


def _plain_onnx(checkpoint: Path, arch: str | None, kwargs: dict[str, Any] | None, trust_pickle: bool,
                shape: tuple[int, ...] | None, exporter: str | None, opset: int | None,
                static_shape: bool) -> tuple[Any, Any, InputInfo, tuple[int, ...], str | None, list[str]]:
    """Load ``checkpoint`` and make the plain ONNX model: (loaded, ONNX model, input info, the
    probe shape, the exporter used or None, notes)."""
    from pgn_deploy.export.load import load_model

    loaded = load_model(checkpoint, arch, kwargs, trust_pickle)
    if loaded.kind == "onnx":
        info = _onnx_input_info(loaded.onnx_model, shape)
        size = info.size or DEFAULT_SIZE
        probe = (shape[0] if shape else 1, len(info.mean), *size)
        return loaded, loaded.onnx_model, info, probe, None, []
    torch = require("torch", "exporting a PyTorch model")
    info = _checkpoint_input_info(loaded.input, shape)
    if static_shape:
        info = dataclasses.replace(info, dynamic_batch=False, dynamic_size=False)
    channels = shape[1] if shape else len(info.mean)
    batch = shape[0] if shape else 1
    example = torch.randn(batch, channels, *info.size, generator=torch.Generator().manual_seed(0))
    check_segmentation_output(loaded.module, example)
    onnx_model, used, notes = export_with_fallback(loaded.module, example, exporter, opset, not static_shape)
    return loaded, onnx_model, info, tuple(example.shape), used, notes


def export_with_fallback(module: Any, example: Any, exporter: str | None, opset: int | None,
                         dynamic: bool) -> tuple[Any, str, list[str]]:
    """Export with ``exporter``; when none is named and the default fails, with the other one.
    Returns the model, the exporter that worked and a note saying so. Raises
    :class:`UnsupportedModelError` with each exporter's one-line reason when all fail."""
    from pgn_deploy.export.onnx_export import export_onnx

    order = [exporter] if exporter else [DEFAULT_EXPORTER, *(e for e in EXPORTERS if e != DEFAULT_EXPORTER)]
    reasons = []
    for name in order:
        try:
            model = export_onnx(module, example, None, exporter=name, opset=opset, dynamic=dynamic)
        except UnsupportedModelError as exc:
            reasons.append(str(exc))
            continue
        notes = [f"the {order[0]} exporter failed ({reasons[0]}); the {name} exporter worked"] if reasons else []
        return model, name, notes
    hint = " (try --static-shape)" if dynamic else ""
    raise UnsupportedModelError("; ".join(reasons) + hint)


def _trained_weights(loaded: Any, onnx_model: Any, head: str | None,
                     weights: str) -> tuple[list[float] | None, str, str]:
    """(folded factor to undo, weights recorded, note) for :func:`graft` (module doc)."""
    from pgn_deploy.export.trained_weights import ONNX_NOTE, match_trained
    from pgn_deploy.graft.attach import find_head

    if weights == "graph":
        if loaded.kind == "onnx":
            return None, "graph", ""
        match = match_trained(loaded.module, onnx_model, find_head(onnx_model, head))
        return None, "graph", match.note("graph")
    if loaded.kind == "onnx":
        return None, "graph", ONNX_NOTE
    match = match_trained(loaded.module, onnx_model, find_head(onnx_model, head))
    if match.layer is None or match.scale is None:  # no layer matches, or the graph's weights are the trained ones
        return None, "graph", match.note("trained")
    return [float(v) for v in match.scale], "trained", match.note("trained")


def _is_grafted_onnx(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is an ONNX file that already carries ``pgn_deploy`` metadata."""
    from pgn_deploy.contract import METADATA_KEY, load_onnx

    path = Path(checkpoint)
    if path.suffix != ".onnx" or not path.is_file():
        return False
    return any(prop.key == METADATA_KEY for prop in load_onnx(path, load_weights=False).metadata_props)


def _calibrated(model: Any, images: Sequence[Any], output: Path) -> Any:
    """``model`` with the calibration measured on ``images`` (ONNX Runtime CPU, through a
    temporary file beside ``output``) in its metadata."""
    import tempfile

    from pgn_deploy.contract import write_metadata
    from pgn_deploy.runtime.calibrate import measure_calibration
    from pgn_deploy.runtime.runner import Runtime

    with tempfile.TemporaryDirectory(prefix=".pgn_calib_", dir=output.parent) as folder:
        staged = Path(folder) / "model.onnx"
        save_onnx(model, staged)
        runtime = Runtime(staged, "ort-cpu")
        calibration, _ = measure_calibration(runtime, list(images))
    meta = read_metadata(model)
    meta.calibration = calibration
    write_metadata(model, meta)
    return model


def _given_normalization(mean: Sequence[float] | None,
                         std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` from ``--mean``/``--std`` (both or neither; 3 values each, std > 0)."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise BadInputError("give --mean and --std together")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise BadInputError(f"--mean and --std need 3 values each (one per channel), got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise BadInputError("--std values must be > 0")
    return mean, std


def check_segmentation_output(module: Any, example: Any) -> None:
    """Run one forward pass; the main output must be ``N x C x H x W`` logits.

    Raises :class:`UnsupportedModelError` for a classifier (e.g. ``N x 1000``) and
    :class:`BadInputError` when the network rejects an input of the example's shape.
    """
    torch = require("torch", "exporting a PyTorch model")
    from pgn_deploy.contract import first_line
    from pgn_deploy.export.onnx_export import segmentation_outputs

    try:
        with torch.no_grad():
            result = module.eval()(example)
    except Exception as exc:  # the network may reject the shape with any exception type
        raise BadInputError(
            f"the model fails on an input of shape {list(example.shape)} (set --input-shape): {first_line(exc)}"
        ) from None
    main = next(iter(segmentation_outputs(result).values()))
    if main.dim() != 4:
        raise UnsupportedModelError(
            f"the model returns a tensor of shape {list(main.shape)}, not N x C x H x W logits: "
            "it is not a segmentation network"
        )


# --------------------------------------------------------------------------- input info
def _checkpoint_input_info(stored: Mapping[str, Any] | None, shape: tuple[int, ...] | None) -> InputInfo:
    """InputInfo from the checkpoint's ``input`` dict and the example shape (size exported at)."""
    stored = dict(stored or {})
    size = tuple(shape[2:]) if shape else _stored_size(stored) or DEFAULT_SIZE
    channels = shape[1] if shape else len(stored.get("mean") or IMAGENET_MEAN)
    info = _normalization(stored, channels)
    return dataclasses.replace(info, size=size, resize=bool(stored.get("resize", False)))


def _normalization(stored: Mapping[str, Any], channels: int) -> InputInfo:
    """Mean/std/channel order/scale from the checkpoint, else assumed defaults (flagged)."""
    if "mean" not in stored and "std" not in stored:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.0,) * channels, (1.0,) * channels)
        return InputInfo(mean=mean, std=std, assumed_normalization=True)
    try:
        mean = tuple(float(v) for v in stored["mean"])
        std = tuple(float(v) for v in stored["std"])
        scale = float(stored.get("scale", 255.0))
    except (KeyError, TypeError, ValueError):
        raise ModelLoadError("the checkpoint's input dict needs 'mean' and 'std' lists of numbers") from None
    if len(mean) != channels or len(std) != channels:
        raise ModelLoadError(f"the checkpoint's input mean/std need {channels} values (one per channel)")
    if min(std) <= 0 or scale <= 0:
        raise ModelLoadError("the checkpoint's input std and scale must be > 0")
    order = str(stored.get("channel_order", "RGB")).upper()
    if order not in ("RGB", "BGR"):
        raise ModelLoadError(f"the checkpoint's input channel_order {order!r} is not RGB or BGR")
    return InputInfo(mean=mean, std=std, scale=scale, channel_order=order)


def _stored_size(stored: Mapping[str, Any]) -> tuple[int, int] | None:
    size = stored.get("size")
    if size is None:
        return None
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ModelLoadError(f"the checkpoint's input size {size!r} is not [height, width]") from None
    if height <= 0 or width <= 0:
        raise ModelLoadError(f"the checkpoint's input size {size!r} must be positive")
    return height, width


def _onnx_input_info(model: Any, shape: tuple[int, ...] | None) -> InputInfo:
    """InputInfo of an ONNX model's first graph input (normalization unknown: assumed)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise UnsupportedModelError("the ONNX model has no graph input")
    graph_input = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UnsupportedModelError(
            f"the ONNX input {graph_input.name!r} has rank {len(dims)}; expected N x C x H x W"
        )
    if shape is not None:
        for axis, (given, graph) in enumerate(zip(shape, dims)):
            if graph is not None and given != graph:
                raise BadInputError(
                    f"--input-shape {'x'.join(map(str, shape))} does not fit the ONNX input "
                    f"{graph_input.name!r} (axis {axis} is {graph})"
                )
    channels = dims[1] or (shape[1] if shape else 3)
    static_size = tuple(dims[2:]) if None not in dims[2:] else None
    info = _normalization({}, channels)
    return dataclasses.replace(
        info,
        name=graph_input.name,
        size=tuple(shape[2:]) if shape else static_size,
        dynamic_batch=dims[0] is None,
        dynamic_size=static_size is None,
    )


def parse_arch_kwargs(arch_kwargs: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """``--arch-kwargs``: a dict or JSON text of an object -> dict (``None`` stays ``None``)."""
    if arch_kwargs is None or isinstance(arch_kwargs, Mapping):
        return dict(arch_kwargs) if arch_kwargs is not None else None
    import json

    try:
        parsed = json.loads(arch_kwargs)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--arch-kwargs is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadInputError("--arch-kwargs must be a JSON object, e.g. '{\"num_classes\": 19}'")
    return parsed


@dataclasses.dataclass
class HeadReport:
    """What head discovery found (``pgn-export --explain``): ``ops`` are ``(role, op, node,
    detail)`` in graph order from the features to the logits output, or ``refusal`` says where
    the walk stopped and which rule it broke."""

    exporter: str | None
    head: HeadInfo | None
    ops: list[tuple[str, str, str, str]]
    refusal: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_text(self) -> str:
        """Human-readable lines."""
        lines = [f"exporter: {self.exporter}"] if self.exporter else []
        lines += [f"note: {note}" for note in self.notes]
        if self.refusal is not None:
            return "\n".join([*lines, f"refused: {self.refusal}"])
        head = self.head
        lines.append(f"head: {head.kind}, {len(head.conv_nodes)} classifier(s), features {', '.join(head.features)}")
        lines += [f"  {role:<10} {op:<20} {name}{f'  ({detail})' if detail else ''}"
                  for role, op, name, detail in self.ops]
        lines.append(f"logits: {head.logits} -> output {head.logits_output}; maps resized: {head.resize}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {"exporter": self.exporter, "notes": self.notes, "refusal": self.refusal,
                "head": None if self.head is None else self.head.to_json(),
                "ops": [dict(zip(("role", "op", "node", "detail"), op)) for op in self.ops]}


def explain_head(
    checkpoint: str | Path,
    *,
    head: str | None = None,
    input_shape: str | Sequence[int] | None = None,
    opset: int | None = None,
    exporter: str | None = None,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | str | None = None,
    trust_pickle: bool = False,
    static_shape: bool = False,
) -> HeadReport:
    """Load and export ``checkpoint`` as :func:`export_model` does and report the classifier head
    that the graft would use, or why there is none; nothing is written."""
    import onnx_ir as ir

    from pgn_deploy.graft.head import locate_head

    shape = None if input_shape is None else parse_shape(input_shape, 4, "input shape")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelLoadError(f"{checkpoint}: no such file")
    _, model, _, _, used, notes = _plain_onnx(checkpoint, arch, parse_arch_kwargs(arch_kwargs), trust_pickle,
                                              shape, exporter, opset, static_shape)
    graph = ir.from_proto(model).graph
    try:
        found = locate_head(graph, head)
    except UnsupportedModelError as exc:
        return HeadReport(used, None, [], str(exc), notes)
    return HeadReport(used, found.info(), _head_ops(graph, found), None, notes)


def _head_ops(graph: Any, found: Any) -> list[tuple[str, str, str, str]]:
    """(role, op, node, detail) of every node of ``found`` in graph order."""
    from pgn_deploy.graft.head import resize_mode

    roles: dict[Any, tuple[str, str]] = {}
    for branch in found.branches:
        window = branch.window
        detail = (f"E={branch.channels}, C={found.num_classes}, kernel {window.kernel[0]}x{window.kernel[1]}, "
                  f"pads {list(window.pads)}, dilations {list(window.dilations)}")
        if branch.linear:
            detail = f"E={branch.channels}, C={found.num_classes}, per token"
        roles[branch.conv] = ("classifier", detail)
        roles.update({node: ("branch", "") for node in branch.path})
        roles.update({node: ("layout", "mirrored on the maps") for node in branch.layout})
    if found.join is not None:
        roles[found.join] = ("join", "")
    roles.update({node: ("spatial", resize_mode(node) if node.op_type == "Resize" else "") for node in found.chain})
    scale = "" if found.scale is None else "factor " + ", ".join(f"{v:.4g}" for v in found.scale)
    roles.update({node: ("affine", scale) for node in found.affine})
    roles.update({node: ("passed", "the graft uses the logits before it") for node in found.passed})
    return [(roles[node][0], node.op_type, node.name, roles[node][1]) for node in graph if node in roles]
