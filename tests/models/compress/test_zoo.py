"""The shipped ``models/zoo/cnn_small.onnx``: contract, and its recorded metrics re-measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.models import contract
from edgevib.models.classes import CLASSES_10
from edgevib.models.compress import onnxio, table
from edgevib.models.compress.data import splits

ZOO = Path(__file__).resolve().parents[3] / "models" / "zoo" / "cnn_small.onnx"


@pytest.mark.data
def test_cnn_small_follows_the_contract_and_its_metrics_hold(cwru_dir: Path) -> None:
    meta = contract.check_contract(ZOO)
    assert meta.arch == "cnn+slim+align+merge+kd+int8" and meta.classes == CLASSES_10  # INHERIT_RECIPE
    ops = {n.op_type for n in onnxio.onnx.load(str(ZOO)).graph.node}
    assert "QuantizeLinear" in ops  # really INT8
    sp = splits(cwru_dir, CLASSES_10)
    sess = table.session(onnxio.onnx.load(str(ZOO)))
    acc = float(np.mean(table.predict(sess, sp.test_load.x3d()) == sp.test_load.y))
    assert acc == pytest.approx(meta.metrics["acc_load3"], abs=0.002)
    assert acc >= 0.95
