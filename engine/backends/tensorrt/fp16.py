"""FP16 ONNX for TensorRT 11: TensorRT 11 has no ``FP16`` builder flag (networks are strongly
typed), so :func:`to_fp16_onnx` rewrites the ONNX model to FP16 first (our own pass with the onnx
package: the uint8 input, the in-graph preprocessing and the outputs stay in their types)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine.errors import BackendError

log = logging.getLogger(__name__)

#: Ops that may belong to the in-graph preprocessing (kept in their own types by to_fp16_onnx).
_PREPROCESS_OPS = frozenset({
    "Cast", "Sub", "Div", "Mul", "Add", "Transpose", "Reshape", "Unsqueeze", "Squeeze",
    "Identity", "Slice", "Concat", "Split", "Gather", "Clip",
})
#: (op, input index) that ONNX requires to be float32 whatever the data type.
_FP32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})
_FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16_onnx(model: Any) -> Any:
    """Return a copy of ``model`` (onnx.ModelProto) computing in FP16.

    Kept as they are: the graph inputs and the preprocessing that follows them (the chain of
    Cast/Sub/Div/Transpose... fed only by the inputs and constants), and the graph outputs (an
    FP16 -> FP32 Cast is appended to each float output). Everything else: FP32 initializers and
    Constant values become FP16 (clipped to the FP16 range), Cast-to-FP32 becomes Cast-to-FP16, and
    a Cast-to-FP16 is inserted where an FP32 tensor enters the FP16 part. Local functions are
    inlined first; control-flow subgraphs (If/Loop/Scan) are refused.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if len(m.functions):
        from onnx import inliner

        m = inliner.inline_local_functions(m)
    g = m.graph
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise BackendError(
                f"cannot convert the ONNX model to FP16: node {n.name or n.op_type} ({n.op_type}) has a "
                "subgraph; export without control flow or build in FP32"
            )
    inferred = onnx.shape_inference.infer_shapes(m)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        types[t.name] = t.data_type
    graph_inputs = {vi.name for vi in g.input if vi.name not in inits}
    float_ = TensorProto.FLOAT

    # 1. the preprocessing region, kept in its own types
    pre_tensors = set(graph_inputs)
    keep: set[int] = set()
    for i, n in enumerate(g.node):
        feeds = [x for x in n.input if x]
        if (
            n.op_type in _PREPROCESS_OPS
            and any(x in pre_tensors for x in feeds)
            and all(x in pre_tensors or x in inits for x in feeds)
        ):
            keep.add(i)
            pre_tensors.update(n.output)

    # 2. rewrite the rest
    fp16_inits: dict[str, str] = {}  # fp32 initializer name -> its fp16 copy
    cast_in: dict[str, str] = {}  # fp32 tensor -> fp16 cast of it
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    clipped = 0

    def fp16_init(name: str) -> str:
        nonlocal clipped
        if name not in fp16_inits:
            arr = numpy_helper.to_array(inits[name])
            clipped += int(np.count_nonzero(np.abs(arr) > _FP16_MAX))
            half = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            new = name + "__fp16"
            new_inits.append(numpy_helper.from_array(half, new))
            fp16_inits[name] = new
        return fp16_inits[name]

    def half_tensor(t: Any) -> Any:
        nonlocal clipped
        arr = numpy_helper.to_array(t)
        clipped += int(np.count_nonzero(np.abs(arr) > _FP16_MAX))
        out = numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), t.name)
        return out

    for i, n in enumerate(g.node):
        if i in keep:
            new_nodes.append(n)
            continue
        for j, x in enumerate(n.input):
            if not x or types.get(x) != float_ or (n.op_type, j) in _FP32_ONLY_INPUTS:
                continue
            if x in inits:
                n.input[j] = fp16_init(x)
            elif x in pre_tensors:  # an fp32 tensor from the kept region or a graph input
                if x not in cast_in:
                    cast_in[x] = x + "__fp16"
                    new_nodes.append(helper.make_node(
                        "Cast", [x], [cast_in[x]], to=TensorProto.FLOAT16, name=f"{x}__to_fp16"))
                n.input[j] = cast_in[x]
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == float_:
                    a.i = TensorProto.FLOAT16
        elif n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == float_:
                    a.t.CopyFrom(half_tensor(a.t))
                elif a.name == "value_float" and n.op_type == "Constant":
                    a.CopyFrom(helper.make_attribute("value", np.array(a.f, np.float16)))
                elif a.name == "value_floats" and n.op_type == "Constant":
                    a.CopyFrom(helper.make_attribute("value", np.array(list(a.floats), np.float16)))
        new_nodes.append(n)

    # 3. float outputs computed in fp16 go back to fp32 under their own names
    produced_in_fp16 = {o for i, n in enumerate(g.node) if i not in keep for o in n.output}
    tail: list[Any] = []
    for out in g.output:
        if out.type.tensor_type.elem_type != float_ or out.name not in produced_in_fp16:
            continue
        inner = out.name + "__fp16_out"
        for n in new_nodes:
            for j, x in enumerate(n.input):
                if x == out.name:
                    n.input[j] = inner
            for j, x in enumerate(n.output):
                if x == out.name:
                    n.output[j] = inner
        tail.append(helper.make_node("Cast", [inner], [out.name], to=float_, name=f"{out.name}__to_fp32"))

    del g.node[:]
    g.node.extend(new_nodes + tail)
    used = {x for n in g.node for x in n.input}
    kept_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    del g.value_info[:]
    if clipped:
        log.warning("FP16 conversion clipped %d weights to the FP16 range (+-%g)", clipped, _FP16_MAX)
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)
