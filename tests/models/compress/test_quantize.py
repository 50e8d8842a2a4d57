from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import onnxio, quantize, table
from edgevib.models.compress.errors import CompressError

from .conftest import CLASSES, W


def _fp32(net: Any) -> Any:
    proto = CNNModel(net, CLASSES).to_onnx()
    return onnxio.set_meta(proto, onnxio.base_meta(CLASSES, 12000, W, "cnn+slim", trained_on="synthetic"))


def test_static_int8_is_qdq_per_channel_keeps_metadata_and_agrees(trained_net: Any, tiny_ws: Any) -> None:
    fp32 = _fp32(trained_net)
    x = tiny_ws.x3d()
    q8 = quantize.quantize_int8_static(fp32, x[::2])
    ops = {n.op_type for n in q8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # per-channel: some weight scale is a vector, one entry per output channel
    inits = {i.name: i for i in q8.graph.initializer}
    scales = [inits[n.input[1]] for n in q8.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    meta = onnxio.read_meta(q8)
    assert meta["edgevib.arch"] == "cnn+slim+int8" and json.loads(meta["edgevib.classes"]) == list(CLASSES)
    assert meta["edgevib.trained_on"] == "synthetic"
    a = table.predict(table.session(fp32), x)
    b = table.predict(table.session(q8), x)
    assert np.mean(a == b) >= 0.9
    # float weights give way to int8 ones: the file shrinks
    assert len(q8.SerializeToString()) < len(fp32.SerializeToString())


def test_dynamic_int8_runs_and_names_itself(trained_net: Any, tiny_ws: Any) -> None:
    qd = quantize.quantize_int8_dynamic(_fp32(trained_net))
    assert onnxio.read_meta(qd)["edgevib.arch"] == "cnn+slim+int8dyn"
    probs = table.session(qd).run(["probs"], {"x": tiny_ws.x3d()[:4]})[0]
    assert probs.shape == (4, len(CLASSES)) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_calibration_input_is_checked(trained_net: Any) -> None:
    with pytest.raises(CompressError, match=r"shape \(5, 1024\)"):
        quantize.quantize_int8_static(_fp32(trained_net), np.zeros((5, W), np.float32))
    with pytest.raises(CompressError, match="method 'bogus'"):
        quantize.quantize_int8_static(_fp32(trained_net), np.zeros((5, 1, W), np.float32), method="bogus")
