from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import table

from .conftest import CLASSES, W


def test_add_noise_hits_the_requested_snr() -> None:
    x = np.random.default_rng(1).standard_normal((50, 1, 4096)).astype(np.float32)
    n = table.add_noise(x, -4.0) - x
    snr = 10 * np.log10(np.mean(x**2) / np.mean(n**2))
    assert abs(snr + 4.0) < 0.1


def test_measure_and_write(tmp_path: Path, trained_net: Any, tiny_ws: Any) -> None:
    proto = CNNModel(trained_net, CLASSES).to_onnx()
    rows = table.measure([("a", proto, 100), ("b", proto, 50)], {"acc_time": (tiny_ws.x3d(), tiny_ws.y)},
                         window=W, rounds=2)
    assert [r["stage"] for r in rows] == ["a", "b"] and all(r["ms_b1"] > 0 and r["ms_b32"] > 0 for r in rows)
    assert rows[0]["acc_time"] == rows[1]["acc_time"] and rows[0]["onnx_bytes"] == len(proto.SerializeToString())
    files = table.write(rows, tmp_path, ref="a")
    assert [f.exists() for f in files] == [True] * 3
    assert json.loads(files[0].read_text())["rows"][1]["params"] == 50
    assert "smaller x" in files[1].read_text()
