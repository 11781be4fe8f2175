"""Derive benchmark variants from a grafted model by removing outputs and pruning the graph.

* :func:`plain_model` -- the model as it was before the graft: only the original outputs,
  every node, input and initializer only the PGN maps, ``pred`` or the baselines needed removed,
  and no ``pgn_deploy`` metadata. The remaining nodes are the original ones, untouched, so the
  original outputs stay bit-identical.
* :func:`keep_outputs` -- the grafted model with only some of its added outputs (``--maps``).

Pruning uses ``onnx_ir``'s ``RemoveUnusedNodesPass`` (unused nodes and initializers). The
graft resizes its maps once as a channel stack (``Concat`` on axis 1, the model's ``Resize``/
``Slice`` ops, ``Split`` into one-channel outputs); when only some of those outputs are kept,
the stack is first narrowed to their channels (:func:`_narrow_stacks`), so that the dropped
maps' own nodes become unused too.
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
    _narrow_stacks(graph)
    RemoveUnusedNodesPass()(graph_model)
    unused = [value for value in graph.inputs if value.name in droppable_inputs and not value.uses()]
    for value in unused:
        graph.inputs.remove(value)
    return ir.to_proto(graph_model)


_PER_CHANNEL_OPS = ("Resize", "Slice")  # spatial ops: each channel of their input is independent


def _stack_concat(split: ir.Node) -> ir.Node | None:
    """The ``Concat`` (axis 1) whose channels reach ``split`` through per-channel ops only,
    one per output of ``split`` (a ``Split`` on axis 1 into one-channel parts); else ``None``."""
    if split.attributes.get_int("axis", 0) != 1:
        return None
    sizes = split.inputs[1] if len(split.inputs) > 1 else None
    if sizes is not None and (sizes.const_value is None or set(sizes.const_value.numpy().tolist()) != {1}):
        return None
    node = split.inputs[0].producer()
    while node is not None and node.op_type in _PER_CHANNEL_OPS:
        if len([use for use in node.outputs[0].uses() if use.node.op_type != "Shape"]) != 1:
            return None
        node = node.inputs[0].producer()
    if node is None or node.op_type != "Concat" or node.attributes.get_int("axis", 0) != 1:
        return None
    return node if len(node.inputs) == len(split.outputs) else None


def _narrow_stacks(graph: ir.Graph) -> None:
    """Keep in each channel stack (see the module docstring) only the channels whose ``Split``
    output is still used; the stack's ``Resize`` sizes follow the ``Concat`` by shape."""
    for split in [node for node in graph if node.op_type == "Split"]:
        used = [i for i, value in enumerate(split.outputs) if value.uses() or value.is_graph_output()]
        concat = _stack_concat(split)
        if concat is None or not used or len(used) == len(split.outputs):
            continue
        stacked = split.inputs[0]
        kept_inputs = [concat.inputs[i] for i in used]
        kept_outputs = [split.outputs[i] for i in used]
        if len(used) == 1:  # no stack: resize the one map itself
            concat.outputs[0].replace_all_uses_with(kept_inputs[0])
            replacements = [stacked]
        else:
            for position, value in enumerate(kept_inputs):
                concat.replace_input_with(position, value)
            concat.resize_inputs(len(used))
            attributes = {"axis": 1} | ({"num_outputs": len(used)} if graph.opset_imports.get("", 0) >= 18 else {})
            narrowed = ir.node("Split", [stacked], attributes, num_outputs=len(used), name=f"{split.name}/kept")
            graph.insert_after(split, narrowed)
            replacements = list(narrowed.outputs)
        for old, new in zip(kept_outputs, replacements):
            name, old.name = old.name, None
            old.replace_all_uses_with(new, replace_graph_outputs=True)
            new.name, new.dtype, new.shape = name, old.dtype, old.shape


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
