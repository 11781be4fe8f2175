"""Plain PyTorch -> ONNX export of a segmentation model, before any graft.

The model may return a tensor (output ``out``), a dict with ``out`` (and ``aux``: torchvision;
both become outputs with those names) or an object with ``.logits`` (transformers; output
``logits``). The graph input is named ``input`` (N x 3 x H x W); batch, height and width are
dynamic unless ``dynamic=False``.
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any

import onnx

from pgn_deploy.contract import BadInputError, UnsupportedModelError, check_output_path, require, save_onnx

EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME = "input"
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
_TORCHSCRIPT_OPSET = 17


def segmentation_outputs(result: Any) -> dict[str, Any]:
    """The named logits tensors of a model's forward result (``out`` [+ ``aux``] or ``logits``)."""
    torch = require("torch", "exporting a PyTorch model")
    if isinstance(result, torch.Tensor):
        return {"out": result}
    if isinstance(result, Mapping) and isinstance(result.get("out"), torch.Tensor):
        return {k: result[k] for k in ("out", "aux") if isinstance(result.get(k), torch.Tensor)}
    logits = getattr(result, "logits", None)
    if isinstance(logits, torch.Tensor):
        return {"logits": logits}
    raise UnsupportedModelError(
        f"the model returns {type(result).__name__}; expected a tensor, a dict with 'out' "
        "(torchvision) or an object with .logits (transformers)"
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CUT_AT = (" Please feel free", " [Caused by", " Next steps", " This is step")


def exporter_error(exc: BaseException) -> str:
    """One line for an exporter failure: the innermost cause (the dynamo exporter wraps the
    real error), its type and first line, without colour codes, cut before PyTorch's advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    for marker in _CUT_AT:
        message = message.split(marker)[0]
    return f"{type(exc).__name__}: {message.strip()}" if message else type(exc).__name__


def _tuple_outputs_module(module: Any, names: list[str]) -> Any:
    """``module`` wrapped so that its forward returns the tensors ``names`` as a tuple."""
    torch = require("torch", "exporting a PyTorch model")

    class TupleOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, input: Any) -> tuple[Any, ...]:  # noqa: A002 -- the ONNX input name
            outputs = segmentation_outputs(self.model(input))
            return tuple(outputs[name] for name in names)

    return TupleOutputs().eval()


def export_onnx(
    module: Any,
    example_input: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    dynamic: bool = True,
    force: bool = False,
) -> onnx.ModelProto:
    """Export ``module`` (put in eval mode) traced on ``example_input`` (N x 3 x H x W float).

    ``exporter``: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``) or ``"torchscript"`` (always
    used for a ``torch.jit.ScriptModule``, which only that exporter reads);
    ``opset``: ONNX opset (``None``: the exporter's default, 17 for torchscript);
    ``dynamic``: batch, height and width symbolic. The model is returned and, when ``path`` is
    given, also saved there atomically (never over an existing file unless ``force``).
    Raises :class:`UnsupportedModelError` when PyTorch cannot export the model.
    """
    torch = require("torch", "exporting a PyTorch model")
    if exporter not in EXPORTERS:
        raise BadInputError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    if not (isinstance(example_input, torch.Tensor) and example_input.dim() == 4):
        raise BadInputError("the example input must be an N x C x H x W tensor")
    if path is not None:
        check_output_path(path, force)  # fail before the (slow) export
    module.eval()
    with torch.no_grad():
        result = module(example_input)
    names = list(segmentation_outputs(result))
    if isinstance(module, torch.jit.ScriptModule):
        # Only the TorchScript exporter reads TorchScript, and a traced wrapper cannot call a
        # loaded ScriptModule: export it as it is (its outputs are already tensors).
        if isinstance(result, Mapping) and list(result) != names:
            raise UnsupportedModelError(
                f"a TorchScript model must return only {' and '.join(names)}, got keys {', '.join(map(str, result))}"
            )
        exporter, wrapped = "torchscript", module
    else:
        wrapped = _tuple_outputs_module(module, names)
    try:
        if exporter == "dynamo":
            model = _export_dynamo(torch, wrapped, example_input, names, opset, dynamic)
        else:
            model = _export_torchscript(torch, wrapped, example_input, names, opset, dynamic)
    except Exception as exc:  # the exporters raise many kinds; report the cause in one line
        raise UnsupportedModelError(f"torch.onnx.export ({exporter}) failed: {exporter_error(exc)}") from exc
    if path is not None:
        save_onnx(model, path, force=force)
    return model


def _export_dynamo(torch: Any, module: Any, x: Any, names: list[str], opset: int | None,
                   dynamic: bool) -> onnx.ModelProto:
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({axis: dim for axis in _DYNAMIC_AXES},)
        if x.shape[0] == 1:  # torch.export specializes size-1 dims: trace a batch of 2
            x = x.expand(2, *x.shape[1:]).contiguous()
    program = torch.onnx.export(
        module,
        (x,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=opset,
        dynamic_shapes=dynamic_shapes,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def _export_torchscript(torch: Any, module: Any, x: Any, names: list[str], opset: int | None,
                        dynamic: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    dynamic_axes = None
    if dynamic:  # outputs get their own spatial dims: logits may be smaller than the input
        dynamic_axes = {INPUT_NAME: _DYNAMIC_AXES} | {
            name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in names
        }
    torch.onnx.export(
        module,
        (x,),
        buffer,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=opset or _TORCHSCRIPT_OPSET,
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )
    return onnx.load_from_string(buffer.getvalue())
