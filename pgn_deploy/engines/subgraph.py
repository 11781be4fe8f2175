"""Which nodes of a grafted model are the network and which the graft added.

The graft only adds nodes and outputs; it never changes how the model's own outputs are
computed. So the *network* is exactly the set of nodes the original outputs
(``Metadata.original_outputs``) depend on, and the *PGN subgraph* is every other node: the
softmax of the head logits, ``|psi|^p`` sums, norms, the resize of the maps, ``pred`` and the
baselines. This structural split needs no naming convention and also holds for a grafted
third-party ONNX model. Precision conversion keeps the PGN subgraph float32; the lint checks it.
"""
from __future__ import annotations

from typing import Any

from pgn_deploy.contract import Metadata, UnsupportedModelError


def producers(graph: Any) -> dict[str, int]:
    """Tensor name -> index (into ``graph.node``) of the node that produces it."""
    return {out: i for i, node in enumerate(graph.node) for out in node.output if out}


def ancestors(graph: Any, tensors: list[str]) -> set[int]:
    """Indices (into ``graph.node``) of every node the ``tensors`` depend on."""
    made_by = producers(graph)
    nodes = list(graph.node)
    seen: set[int] = set()
    stack = [made_by[t] for t in tensors if t in made_by]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(made_by[t] for t in nodes[i].input if t in made_by)
    return seen


def split_nodes(model: Any, meta: Metadata) -> tuple[list[Any], list[Any]]:
    """``(network nodes, PGN subgraph nodes)`` of the grafted ``model``, in graph order."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    missing = [name for name in meta.original_outputs if name not in outputs]
    if missing:
        raise UnsupportedModelError(
            f"the metadata names original outputs the graph lacks: {', '.join(missing)}"
        )
    network = ancestors(graph, list(meta.original_outputs))
    nodes = list(graph.node)
    return ([n for i, n in enumerate(nodes) if i in network],
            [n for i, n in enumerate(nodes) if i not in network])


def half_precision_in_pgn(model: Any, meta: Metadata) -> list[str]:
    """Tensors produced by PGN-subgraph nodes (or PGN/baseline outputs) that are not float32.

    Empty for a correct model. Inputs of the subgraph may be half precision (the casts that
    bring network tensors to float32 are part of it); what it produces must be float32.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except onnx.shape_inference.InferenceError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UnsupportedModelError(f"ONNX type inference fails on the model: {first}") from None
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    _, added = split_nodes(model, meta)
    produced = [out for node in added for out in node.output if out]
    wrong = [name for name in produced if types.get(name) in half]
    wrong += [name for name in meta.score_outputs if types.get(name) != onnx.TensorProto.FLOAT and name not in wrong]
    return wrong


def pgn_node_names(model: Any, meta: Metadata) -> list[str]:
    """Names of the PGN subgraph's nodes (every node of a grafted model has a unique name)."""
    _, added = split_nodes(model, meta)
    unnamed = [node.op_type for node in added if not node.name]
    if unnamed:
        raise UnsupportedModelError(
            f"{len(unnamed)} PGN subgraph node(s) have no name ({', '.join(sorted(set(unnamed)))}); "
            "re-export the model with pgn-export"
        )
    return [node.name for node in added]
