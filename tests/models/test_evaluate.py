"""Evaluation of a real (tiny, hand-built) ONNX classifier on simulated windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgevib.models.contract import ModelMeta, save
from edgevib.models.data import Recording
from edgevib.models.errors import ContractError
from edgevib.models.evaluate import (
    add_noise,
    confusion,
    confusion_table,
    evaluate,
    macro_f1,
    recording_vote,
    write_report,
)
from edgevib.models.simulate import simulate
from edgevib.models.split import WindowSet, windows
from onnx import TensorProto, helper, numpy_helper

W = 512
CLASSES = ("normal", "IR")


def rms_model(path: Path, threshold: float = 0.14) -> Path:
    """P(IR) = sigmoid(200 * (rms(x) - threshold)): a real, if simple, fault detector."""
    inits = [numpy_helper.from_array(np.array([threshold], np.float32), "thr"),
             numpy_helper.from_array(np.array([[0.0, 200.0]], np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1, 2], keepdims=0),
             helper.make_node("Sqrt", ["ms"], ["rms"]),
             helper.make_node("Sub", ["rms", "thr"], ["d"]),
             helper.make_node("Unsqueeze", ["d", "ax"], ["d2"]),
             helper.make_node("MatMul", ["d2", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, W])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save(model, ModelMeta(CLASSES, 12000.0, W, W, "rms-test"), path)
    return path


@pytest.fixture
def ws() -> WindowSet:
    recs = [Recording(simulate(f, duration_s=1.0, seed=s), 12000.0, 1797.0, f, 0.007 if f == "IR" else 0.0, "", 0,
                      f"{f}{s}") for f in ("normal", "IR") for s in (1, 2)]
    return windows(recs, W, W, CLASSES)


def test_evaluate_clean_and_noisy(tmp_path: Path, ws: WindowSet) -> None:
    model = rms_model(tmp_path / "rms.onnx")
    seen: list[tuple[int, int]] = []
    res = evaluate(model, ws, snrs=(20, -10), batch=8, progress=lambda d, t, m="": seen.append((d, t)))
    assert res["clean"]["accuracy"] == 1.0 and res["clean"]["macro_f1"] == 1.0
    assert res["clean"]["recordings"] == {"correct": 4, "total": 4, "accuracy": 1.0, "wrong": []}
    assert res["snr"]["20"]["accuracy"] == 1.0
    # at -10 dB the noise power is 10x the signal's: normal windows look as loud as faults
    noisy = res["snr"]["-10"]
    assert noisy["recall"]["normal"] < 0.2 and noisy["accuracy"] < 0.65
    assert seen[-1][0] == seen[-1][1] == 3 * -(-len(ws) // 8)
    js, png = write_report(res, tmp_path / "out", "rms")
    assert json.loads(js.read_text())["snr"]["-10"]["confusion"] == noisy["confusion"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "normal" in confusion_table(noisy["confusion"], CLASSES)


def test_evaluate_refuses_mismatched_data(tmp_path: Path, ws: WindowSet) -> None:
    model = rms_model(tmp_path / "rms.onnx")
    other = WindowSet(ws.x, ws.y, ("normal", "OR"), ws.recording, ws.start, ws.sources, ws.fs, ws.rpm)
    with pytest.raises(ContractError, match="classes.*expects"):
        evaluate(model, other)


def test_add_noise_hits_the_snr(rng: np.random.Generator) -> None:
    x = rng.normal(0, 0.3, (50, 1, 4096)).astype(np.float32)
    for snr in (0.0, -4.0, 10.0):
        noise = add_noise(x, snr, seed=3) - x
        measured = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
        assert measured == pytest.approx(snr, abs=0.1)
    np.testing.assert_array_equal(add_noise(x, 0, seed=1), add_noise(x, 0, seed=1))


def test_metrics_by_hand(ws: WindowSet) -> None:
    cm = confusion(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class0 2*1/(2+2)=0.5, class1 2*2/(3+2)=0.8, class2 0
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    pred = ws.y.copy()
    first = ws.recording == 0
    pred[np.flatnonzero(first)[: first.sum() // 2 + 1]] = 1  # majority of recording 0 wrong
    vote = recording_vote(ws, pred)
    assert vote["correct"] == 3 and vote["wrong"] == ["normal1 -> IR"]
