"""Append ONNX nodes to an ``onnx_ir`` graph: unique names, opset-aware reductions, constants.

Every value and node the builder creates is named ``<prefix><hint>_<k>`` and never collides with
an existing name; nodes are appended at the end of the graph (after every producer they use).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

FLOAT = ir.DataType.FLOAT
_AXES_AS_INPUT_SINCE = {"ReduceSum": 13}  # every other Reduce* takes axes as an input from 18


class GraphBuilder:
    """Adds nodes to ``graph`` (default-domain opset ``graph.opset_imports['']``)."""

    def __init__(self, graph: ir.Graph, prefix: str = "pgn/") -> None:
        self.graph = graph
        self.opset = graph.opset_imports.get("", 0)
        self.prefix = prefix
        self._taken = {v.name for v in (*graph.inputs, *graph.initializers.values())}
        for node in graph.all_nodes():
            self._taken.add(node.name)
            self._taken.update(v.name for v in node.outputs)
        self._counter = itertools.count()
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], ir.Value] = {}
        self._memo: dict[tuple[Any, ...], ir.Value] = {}

    def fresh(self, hint: str) -> str:
        """A name not used anywhere in the graph."""
        while (name := f"{self.prefix}{hint}_{next(self._counter)}") in self._taken:
            pass
        self._taken.add(name)
        return name

    def claim(self, name: str) -> str:
        """Reserve an exact name (a graph output); raises ValueError when it is taken."""
        if name in self._taken:
            raise ValueError(name)
        self._taken.add(name)
        return name

    def op(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attributes: dict[str, Any] | None = None,
        *,
        num_outputs: int = 1,
        names: Sequence[str] | None = None,
    ) -> Any:
        """Append one node; returns its output value (or the list of them when several)."""
        node = ir.node(op_type, list(inputs), attributes or {}, num_outputs=num_outputs, name=self.fresh(op_type))
        for i, value in enumerate(node.outputs):
            value.name = names[i] if names else self.fresh(op_type.lower())
        self.graph.append(node)
        return node.outputs[0] if num_outputs == 1 else list(node.outputs)

    def memo(self, key: tuple[Any, ...], make: Any) -> ir.Value:
        """``make()`` once per ``key`` (shares shapes, casts, powers between maps)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def const(self, array: Any, dtype: Any = np.float32) -> ir.Value:
        """An initializer holding ``array`` (shared between equal constants)."""
        array = np.asarray(array, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._constants:
            value = ir.Value(name=self.fresh("const"), const_value=ir.tensor(array))
            value.shape, value.dtype = ir.Shape(array.shape), value.const_value.dtype
            self.graph.register_initializer(value)
            self._constants[key] = value
        return self._constants[key]

    def reduce(self, op_type: str, x: ir.Value, axis: int = 1, keepdims: bool = True) -> ir.Value:
        """``op_type`` (ReduceSum, ReduceMax, ReduceL1, ReduceSumSquare) over one axis."""
        attributes = {"keepdims": int(keepdims)}
        if self.opset >= _AXES_AS_INPUT_SINCE.get(op_type, 18):
            return self.op(op_type, [x, self.const([axis], np.int64)], attributes)
        return self.op(op_type, [x], attributes | {"axes": [axis]})

    def to_float(self, x: ir.Value) -> ir.Value:
        """``x`` as float32 (a Cast unless it is known to be float32 already)."""
        if x.dtype == FLOAT:
            return x
        return self.memo(("float", x), lambda: self.op("Cast", [x], {"to": int(FLOAT)}))

    def dims(self, x: ir.Value, start: int, end: int) -> ir.Value:
        """``Shape(x)[start:end]`` as a 1-D int64 tensor."""

        def make() -> ir.Value:
            if self.opset >= 15:
                return self.op("Shape", [x], {"start": start, "end": end})
            shape = self.op("Shape", [x])
            return self.op("Slice", [shape, self.const([start], np.int64), self.const([end], np.int64)])

        return self.memo(("dims", x, start, end), make)

    def dim(self, x: ir.Value, axis: int) -> ir.Value:
        """``Shape(x)[axis]`` as an int64 scalar."""
        return self.memo(
            ("dim", x, axis),
            lambda: self.op("Squeeze", [self.dims(x, axis, axis + 1), self.const([0], np.int64)]),
        )
