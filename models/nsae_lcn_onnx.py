"""Export a trained :class:`~edgevib.models.nsae_lcn.NSAELCN` to the project's ONNX contract.

Graph (opset 17): ``x`` [N, 1, W] -> optional FIR low-pass Conv -> per-window z-score -> Conv(filters, stride) -> Relu ->
ReduceMean over segments -> MatMul + Add -> Softmax -> ``probs`` [N, C]. ``onnx`` is imported
here only, so the edge (which never imports onnx) can still import the numpy model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgevib.extras import require

if TYPE_CHECKING:
    import onnx
    from edgevib.models.nsae_lcn import NSAELCN

OPSET = 17


def build_onnx(model: NSAELCN) -> onnx.ModelProto:
    """Build and check the ONNX model of ``model`` (input ``x``, output ``probs``)."""
    from edgevib.models.nsae_lcn import EPS

    onnx = require("onnx", extra="train", feature="NSAE-LCN ONNX export")
    from onnx import TensorProto, helper, numpy_helper

    k, n_in = model.filters.shape
    c = len(model.classes)
    inits = [
        numpy_helper.from_array(model.filters.astype(np.float32).reshape(k, 1, n_in), "filters"),
        numpy_helper.from_array(model.clf_w.astype(np.float32), "clf_w"),
        numpy_helper.from_array(model.clf_b.astype(np.float32), "clf_b"),
        numpy_helper.from_array(np.array(EPS, np.float32), "eps"),
    ]
    nodes = []
    src = "x"
    if model.fir is not None:
        # the fixed anti-alias low-pass, 'valid' like nsae_lcn.prefilter
        inits.append(numpy_helper.from_array(model.fir.astype(np.float32).reshape(1, 1, -1), "fir"))
        nodes.append(helper.make_node("Conv", ["x", "fir"], ["xf"], kernel_shape=[len(model.fir)]))
        src = "xf"
    nodes += [
        # per-window z-score; Sqrt(var + eps) matches nsae_lcn.normalize
        helper.make_node("ReduceMean", [src], ["mean"], axes=[2], keepdims=1),
        helper.make_node("Sub", [src, "mean"], ["xc"]),
        helper.make_node("Mul", ["xc", "xc"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[2], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        # the local layer: every segment through the NSAE encoder
        helper.make_node("Conv", ["xn", "filters"], ["local"], kernel_shape=[n_in], strides=[model.stride]),
        helper.make_node("Relu", ["local"], ["act"]),
        helper.make_node("ReduceMean", ["act"], ["feat"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["feat", "clf_w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "clf_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "nsae_lcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, model.window])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", c])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgevib.models.nsae_lcn")
    proto.ir_version = 8  # opset 17 needs IR >= 8; stay low so older runtimes load it
    proto.doc_string = f"NSAE-LCN: {k} filters of {n_in} samples, stride {model.stride}, classes {list(model.classes)}"
    onnx.checker.check_model(proto, full_check=True)
    return proto
