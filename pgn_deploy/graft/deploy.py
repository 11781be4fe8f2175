"""The post-graft steps that make a deployment: in-graph normalisation, input format, kept outputs.

:func:`prepare_deployment` applies, in this order, to a grafted (and, when asked, calibrated and
precision-converted) model:

1. ``normalize``: ``<map>_norm`` and ``ood_mask`` outputs (:mod:`pgn_deploy.graft.normalize`);
2. ``input_format``: uint8 camera frames in, preprocessing in the graph
   (:mod:`pgn_deploy.graft.preprocess`);
3. ``outputs``: only the named outputs stay (:func:`keep_outputs`), so a client does not pull
   outputs it does not use (e.g. the C x H x W logits).

Pruning comes last: the precision converter and the lint tell the network from the PGN
subgraph by the model's original outputs, which a pruned model may no longer have.
"""
from __future__ import annotations

from collections.abc import Sequence

import onnx

from pgn_deploy.contract import BadInputError, read_metadata, unique, write_metadata
from pgn_deploy.engines.subgraph import ancestors
from pgn_deploy.graft.normalize import add_normalization
from pgn_deploy.graft.preprocess import add_input_format


def keep_outputs(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of the grafted ``model`` with only ``outputs`` (graph output names) left.

    Nodes, constants and optional inputs nothing kept depends on are removed; the metadata
    forgets the dropped outputs and lists them under ``dropped``. The class map must stay
    (``pred`` or the logits) and at least one score map, since every client needs them.
    """
    meta = read_metadata(model)
    wanted = unique(outputs)
    present = [o.name for o in model.graph.output]
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise BadInputError(f"--outputs names {', '.join(unknown)}, which the model lacks; it has {', '.join(present)}")
    if not any(name in wanted for name in (meta.pred, meta.head.logits_output) if name):
        raise BadInputError(f"--outputs must keep the class map: {meta.pred or meta.head.logits_output!r}")
    if not any(name in wanted for name in meta.score_outputs):
        raise BadInputError(f"--outputs must keep at least one score map of {', '.join(meta.score_outputs)}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    kept_outputs = [o for o in graph.output if o.name in wanted]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    needed = ancestors(graph, wanted)
    nodes = [node for i, node in enumerate(graph.node) if i in needed]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input} | set(wanted)
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    inputs = [i for i in graph.input if i.name in used or i.name == meta.input.name]
    del graph.input[:]
    graph.input.extend(inputs)
    meta.dropped_outputs = unique([*meta.dropped_outputs, *(name for name in present if name not in wanted)])
    meta.original_outputs = [name for name in meta.original_outputs if name in wanted]
    meta.pgn_outputs = [name for name in meta.pgn_outputs if name in wanted]
    meta.baselines = [name for name in meta.baselines if name in wanted]
    meta.pred = meta.pred if meta.pred in wanted else None
    meta.normalized = {k: v for k, v in meta.normalized.items() if v in wanted}
    if meta.ood_mask and meta.ood_mask["output"] not in wanted:
        meta.ood_mask = None
    write_metadata(result, meta)
    onnx.checker.check_model(result)
    return result


def prepare_deployment(model: onnx.ModelProto, *, normalize: bool = False, input_format: str = "float-nchw",
                       outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """``model`` after the steps asked for (see the module docstring); always a new model."""
    if normalize:
        model = add_normalization(model)
    model = add_input_format(model, input_format)
    return keep_outputs(model, outputs) if outputs else model
