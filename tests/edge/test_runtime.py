"""ONNX Runtime wrapper on tiny models built with onnx.helper."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgevib.edge.errors import ModelError
from edgevib.edge.model import FunctionModel, Model, describe
from edgevib.edge.runtime import OnnxModel
from edgevib.models.contract import ModelMeta, attach
from onnx import TensorProto, helper, numpy_helper

W, C = 64, 3
META = ModelMeta(("normal", "IR007", "OR021"), sample_rate=12000.0, window=W, hop=32, arch="tiny", version="7")


def _weights() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(W, C)).astype(np.float32)


def _proto(out_dim: int | str = "N", n_cls: int = C, in_name: str = "x") -> onnx.ModelProto:
    w = _weights()[:, :n_cls]
    nodes = [helper.make_node("Flatten", [in_name], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", 1, W])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [out_dim, n_cls])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _write(tmp_path: Path, proto: onnx.ModelProto, meta: ModelMeta | None = META) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(attach(proto, meta) if meta is not None else proto, str(p))
    return p


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_loads_meta_and_predicts(tmp_path: Path, rng: np.random.Generator) -> None:
    p = _write(tmp_path, _proto())
    m = OnnxModel(p, threads=2)
    assert isinstance(m, Model)
    assert m.meta.classes == META.classes and m.meta.window == W and m.name == "tiny" and m.version == "7"
    assert m.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert describe(m) == {"name": "tiny", "version": "7", "sha256": m.sha256}
    assert m.session.get_session_options().intra_op_num_threads == 2
    x = rng.normal(size=(5, 1, W)).astype(np.float32)
    probs = m.predict(x)
    assert probs.shape == (5, C) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _softmax(x[:, 0, :] @ _weights()), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.predict(x[:, 0, :]), probs)  # [N, W] accepted
    assert OnnxModel(p.read_bytes()).sha256 == m.sha256


@pytest.mark.parametrize("shape", [(2, 2, W), (2, 1, W + 1), (W,), (0, 1, W)])
def test_bad_batch_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    m = OnnxModel(_write(tmp_path, _proto()))
    with pytest.raises(ModelError, match=r"edge.runtime: input shape .*fix: pass float32 \[N, 1, 64\]"):
        m.predict(np.zeros(shape, np.float32))


def test_nan_input_refused(tmp_path: Path) -> None:
    m = OnnxModel(_write(tmp_path, _proto()))
    x = np.zeros((1, 1, W), np.float32)
    x[0, 0, 3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        m.predict(x)


def test_contract_violations(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="lacks metadata"):
        OnnxModel(_write(tmp_path, _proto(), meta=None))
    with pytest.raises(ModelError, match="outputs"):
        OnnxModel(_write(tmp_path, _proto(n_cls=2)))  # 2 outputs, 3 classes in meta
    with pytest.raises(ModelError, match="inputs"):
        OnnxModel(_write(tmp_path, _proto(in_name="signal")))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable"):
        OnnxModel(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="threads"):
        OnnxModel(_write(tmp_path, _proto()), threads=0)


def test_function_model_checks_its_output() -> None:
    bad = FunctionModel(META, lambda x: np.zeros((len(x), 2), np.float32), name="bad")
    with pytest.raises(ModelError, match=r"edge.model\[bad\]: output shape"):
        bad.predict(np.zeros((1, 1, W), np.float32))


def test_edge_modules_never_import_torch_or_onnx() -> None:
    import subprocess
    import sys
    mods = [f"edge.{m}" for m in "errors windowing model runtime alerting evidence anomaly outbox".split()]
    mods += ["protocol", "protocol.frames", "protocol.evidence", "protocol.updates", "protocol.labels"]
    code = ("import sys\n" + "".join(f"import edgevib.{m}\n" for m in mods)
            + "bad = [m for m in ('torch', 'onnx', 'pyflink') if m in sys.modules]\nprint(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
