"""The ONNX contract: metadata round trip through onnxruntime only, layout checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta, attach, check_contract, read_meta, save
from edgevib.models.errors import ContractError
from onnx import TensorProto, helper, numpy_helper


def tiny_model(window: int = 64, c: int = 10, in_name: str = "x", rank: int = 3, softmax: bool = True) -> Any:
    """x [N,1,W] -> flatten -> matmul -> softmax: a real, runnable ONNX graph."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(window, c)).astype(np.float32), "w")
    shape: list[Any] = ["N", 1, window] if rank == 3 else ["N", window]
    nodes = [helper.make_node("Flatten", [in_name], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1) if softmax
             else helper.make_node("Identity", ["logits"], ["probs"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", c])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


META = ModelMeta(CLASSES_10, 12000.0, 64, 32, "tiny", "0.1", "CWRU time split", {"accuracy": 0.9})


def test_round_trip_path_and_bytes(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    assert save(tiny_model(), META, p) == META
    assert read_meta(p) == META and read_meta(p.read_bytes()).metrics == {"accuracy": 0.9}
    props = {e.key: e.value for e in onnx.load(str(p)).metadata_props}
    assert props["edgevib.classes"].startswith('["normal", "B007"') and props["edgevib.window"] == "64"


def test_edge_modules_need_neither_onnx_nor_torch(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    save(tiny_model(), META, p)
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from edgevib.models import bearing, classes, data, simulate, split\n"
            "from edgevib.models.contract import read_meta, check_contract\n"
            "assert not {'torch', 'matplotlib'} & set(sys.modules), 'heavy import'\n"
            f"m = check_contract({str(p)!r}); print(m.arch, len(m.classes), read_meta({str(p)!r}).window)\n"
            "assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tiny", "10", "64"]


def test_attach_replaces_only_its_own_keys() -> None:
    m = tiny_model()
    helper.set_model_props(m, {"author": "me", "edgevib.arch": "old"})
    attach(m, META)
    props = {e.key: e.value for e in m.metadata_props}
    assert props["author"] == "me" and props["edgevib.arch"] == "tiny"
    assert len([e for e in m.metadata_props if e.key == "edgevib.arch"]) == 1


@pytest.mark.parametrize(("model", "match"), [
    (tiny_model(c=4), r"outputs .*10 classes"),
    (tiny_model(rank=2), r"inputs .*\[N, 1, 64\]"),
    (tiny_model(in_name="input"), r"inputs \[\('input'"),
    (tiny_model(softmax=False), "softmax"),
])
def test_layout_violations(tmp_path: Path, model: Any, match: str) -> None:
    p = tmp_path / "bad.onnx"
    onnx.save(attach(model, META), str(p))
    with pytest.raises(ContractError, match=match):
        check_contract(p)


def test_missing_metadata_and_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "bare.onnx"
    onnx.save(tiny_model(), str(p))
    with pytest.raises(ContractError, match=r"bare.onnx.*lacks metadata.*edgevib.classes"):
        read_meta(p)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ContractError, match="junk.onnx.*not a loadable ONNX"):
        read_meta(junk)
    with pytest.raises(ContractError, match="not found"):
        read_meta(tmp_path / "nope.onnx")
    m = tiny_model()
    helper.set_model_props(m, {**META.to_props(), "edgevib.classes": "{oops"})
    onnx.save(m, str(p))
    with pytest.raises(ContractError, match="malformed metadata"):
        read_meta(p)


@pytest.mark.parametrize("kw", [{"classes": ("normal",)}, {"classes": ("normal", "XX9")}, {"sample_rate": 0.0},
                                {"window": 0}, {"hop": 0}, {"arch": ""}])
def test_meta_validation(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"classes": CLASSES_10, **kw}
    with pytest.raises(ContractError, match="models.contract"):
        ModelMeta(**args)
