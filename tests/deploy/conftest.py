"""A tiny contract-conforming ONNX model and a gateway config for the deploy tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.models.classes import CLASSES_10

from tests.conftest import _missing

W = 2048


def write_tiny_model(path: Path) -> Path:
    """A 10-class model on 2048-sample windows (linear layer + softmax), with edgevib metadata."""
    try:
        from onnx import TensorProto, helper, numpy_helper, save
    except ModuleNotFoundError:
        _missing("onnx is not installed (pip install -e '.[dev]')")
        raise
    from edgevib.models.contract import ModelMeta, attach

    w = np.random.default_rng(0).normal(scale=0.01, size=(W, len(CLASSES_10))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, W])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES_10)])],
        [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ModelMeta(tuple(CLASSES_10), sample_rate=12000.0, window=W, hop=1024, arch="tiny", version="1")
    save(attach(proto, meta), str(path))
    return path


def write_config(path: Path, broker_url: str, *, gateway: str = "gw-a", extra: str = "") -> Path:
    path.write_text(
        f'site = "plant1"\ngateway = "{gateway}"\nbroker_url = "{broker_url}"\nheartbeat_s = 0.5\n'
        f'model = "tiny.onnx"\n{extra}\n[alert]\nk = 2\n\n[sensors.de]\nasset = "pump-3"\nrpm = 1797\n')
    return path


@pytest.fixture
def gw_dir(tmp_path: Path) -> Path:
    """A directory holding ``gw.toml`` (broker 127.0.0.1:1) and the ``tiny.onnx`` it names."""
    write_tiny_model(tmp_path / "tiny.onnx")
    write_config(tmp_path / "gw.toml", "mqtt://127.0.0.1:1")
    return tmp_path
