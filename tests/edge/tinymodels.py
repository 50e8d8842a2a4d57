"""Tiny ONNX models built with ``onnx.helper`` for the model-update tests (milliseconds to load).

``good``: IR007 when the window's mean square exceeds 0.5, else normal. ``nan``: NaN on
every input. ``nan_loud``: like ``good`` but NaN when the window's max |x| exceeds
``threshold`` (shadow-run on quiet windows cannot see it).
"""

from __future__ import annotations

import numpy as np
from edgevib.models.contract import ModelMeta, attach

W = 2048


def tiny_onnx(kind: str = "good", *, classes: tuple[str, ...] = ("normal", "IR007"), window: int = W,
              sample_rate: float = 12000.0, version: str = "1", threshold: float = 5.0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    c = len(classes)
    w = np.zeros((1, c), np.float32)
    w[0, 1] = 20.0  # the second class wins when the mean square exceeds 0.5; any others stay unlikely
    b = np.full((c,), -5.0, np.float32)
    b[0], b[1] = 0.0, -10.0
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([-1, 1], np.int64), "shape"),
             numpy_helper.from_array(np.array([np.nan], np.float32), "nan"),
             numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
             numpy_helper.from_array(np.array([threshold], np.float32), "thr")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms3"], axes=[1, 2], keepdims=1),
             helper.make_node("Reshape", ["ms3", "shape"], ["ms"]),
             helper.make_node("Mul", ["ms", "w"], ["a"]),
             helper.make_node("Add", ["a", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p" if kind != "good" else "probs"], axis=1)]
    if kind == "nan":
        nodes.append(helper.make_node("Add", ["p", "nan"], ["probs"]))
    elif kind == "nan_loud":
        nodes += [helper.make_node("Abs", ["x"], ["ab"]),
                  helper.make_node("ReduceMax", ["ab"], ["mx3"], axes=[1, 2], keepdims=1),
                  helper.make_node("Reshape", ["mx3", "shape"], ["mx"]),
                  helper.make_node("Greater", ["mx", "thr"], ["loud"]),
                  helper.make_node("Where", ["loud", "nan", "zero"], ["poison"]),
                  helper.make_node("Add", ["p", "poison"], ["probs"])]
    elif kind != "good":
        raise ValueError(kind)
    used = {i for n in nodes for i in n.input}
    inits = [t for t in inits if t.name in used]
    graph = helper.make_graph(nodes, f"tiny_{kind}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, window])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", c])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    meta = ModelMeta(tuple(classes), sample_rate=sample_rate, window=window, hop=1024, arch=f"tiny_{kind}",
                     version=version)
    return bytes(attach(proto, meta).SerializeToString())
