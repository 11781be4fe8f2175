"""Derive benchmark variants from a grafted model by removing outputs and pruning the graph.

* :func:`plain_model` -- the model as it was before the graft: only the original outputs,
  every node, input and initializer only the PGN maps, ``pred`` or the baselines needed removed,
  and no ``pgn_deploy`` metadata. The remaining nodes are the original ones, untouched, so the
  original outputs stay bit-identical.
* :func:`keep_outputs` -- the grafted model with only some of its added outputs (``--maps``).

Pruning uses ``onnx_ir``'s ``RemoveUnusedNodesPass`` (unused nodes and initializers). The
graft resizes each map on its own (no channel stack), so a dropped map's nodes, its resize
included, become unused and go; work shared with a kept output stays.
"""
from __future__ import annotations

from collections.abc import Sequence

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from pgn_deploy.contract import METADATA_KEY, BadInputError, Metadata, read_metadata, write_metadata


def added_outputs(meta: Metadata) -> list[str]:
    """Every output the graft added: the PGN maps, ``pred``, the baselines."""
    return [*meta.pgn_outputs, *([meta.pred] if meta.pred else []), *meta.baselines]


def _prune(model: onnx.ModelProto, keep: Sequence[str], droppable_inputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` with only the outputs ``keep`` (graph order kept) and the nodes they
    need; graph inputs named in ``droppable_inputs`` go too when nothing uses them any more."""
    graph_model = ir.from_proto(model)
    graph = graph_model.graph
    wanted = set(keep)
    kept = [value for value in graph.outputs if value.name in wanted]
    graph.outputs.clear()
    graph.outputs.extend(kept)
    RemoveUnusedNodesPass()(graph_model)
    unused = [value for value in graph.inputs if value.name in droppable_inputs and not value.uses()]
    for value in unused:
        graph.inputs.remove(value)
    return ir.to_proto(graph_model)


def plain_model(grafted: onnx.ModelProto) -> onnx.ModelProto:
    """The grafted model without anything the graft added (see the module docstring)."""
    meta = read_metadata(grafted)
    plain = _prune(grafted, meta.original_outputs, [meta.gt_input] if meta.gt_input else [])
    for prop in list(plain.metadata_props):
        if prop.key == METADATA_KEY:
            plain.metadata_props.remove(prop)
    return plain


def keep_outputs(grafted: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """The grafted model with the original outputs and, of the added ones, only ``names``.

    ``names`` may list PGN maps, ``pred`` and baselines; an unknown name raises
    :class:`BadInputError`. The metadata's output lists are updated to match.
    """
    meta = read_metadata(grafted)
    added = added_outputs(meta)
    unknown = [name for name in names if name not in added]
    if unknown:
        raise BadInputError(f"the model has no added output {', '.join(unknown)}; it has {', '.join(added)}")
    if not names:
        raise BadInputError("name at least one map to keep")
    selected = set(names)
    pruned = _prune(grafted, [*meta.original_outputs, *names], [meta.gt_input] if meta.gt_input else [])
    meta.pgn_outputs = [n for n in meta.pgn_outputs if n in selected]
    meta.baselines = [n for n in meta.baselines if n in selected]
    meta.pred = meta.pred if meta.pred in selected else None
    if meta.gt_input not in {value.name for value in pruned.graph.input}:
        meta.gt_input = None
    write_metadata(pruned, meta)
    return pruned
