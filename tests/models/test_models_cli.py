"""``edgevib models`` end to end on simulated recordings, with a small real trainer injected."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgevib.models import arch as archs
from edgevib.models.contract import read_meta
from edgevib.models.data import NOMINAL_RPM, load_dir
from edgevib.models.evaluate import confusion
from edgevib.models.simulate import simulate
from edgevib.models.split import WindowSet, load_split, time_split
from onnx import TensorProto, helper, numpy_helper

from edgevib.cli import main

CLASSES = "normal,B007,IR007,OR007"
SEVERITY = {"normal": 0.0, "B": 2.0, "IR": 1.0, "OR": 0.5}


class LogPowerModel:
    """Nearest class centroid of a window's log power: a real, weak classifier that exports to ONNX."""

    arch = "logpower"

    def __init__(self, centroids: np.ndarray, window: int) -> None:
        self.centroids, self.window = centroids.astype(np.float32), window

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = -20.0 * (np.log(np.mean(x[:, 0] ** 2, axis=1, keepdims=True) + 1e-12) - self.centroids) ** 2
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def to_onnx(self) -> Any:
        arrays: list[tuple[np.ndarray, str]] = [
            (self.centroids, "c"), (np.array([1e-12], np.float32), "eps"), (np.array([-20.0], np.float32), "k"),
            (np.array([1], np.int64), "ax")]
        inits = [numpy_helper.from_array(a, n) for a, n in arrays]
        nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
                 helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1, 2], keepdims=0),
                 helper.make_node("Add", ["ms", "eps"], ["ms1"]), helper.make_node("Log", ["ms1"], ["lp"]),
                 helper.make_node("Unsqueeze", ["lp", "ax"], ["lp2"]), helper.make_node("Sub", ["lp2", "c"], ["d"]),
                 helper.make_node("Mul", ["d", "d"], ["d2"]), helper.make_node("Mul", ["d2", "k"], ["z"]),
                 helper.make_node("Softmax", ["z"], ["probs"], axis=1)]
        graph = helper.make_graph(
            nodes, "logpower", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, self.window])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(self.centroids)])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fake_train(ws: WindowSet, *, seed: int = 0, progress: Any = None, epochs: int = 1, **opts: Any) -> LogPowerModel:
    if opts:
        raise TypeError(f"unexpected options {opts}")
    lp = np.log(np.mean(ws.x.astype(np.float64) ** 2, axis=1) + 1e-12)
    for e in range(epochs):
        if progress:
            progress(e + 1, epochs, "epoch")
    return LogPowerModel(np.array([lp[ws.y == k].mean() for k in range(len(ws.classes))]), ws.window)


@pytest.fixture
def sim_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    for k, label in enumerate(("normal", "B", "IR", "OR")):
        for load, rpm in NOMINAL_RPM.items():
            sig = simulate(label, duration_s=2.0, rpm=rpm, severity=SEVERITY[label], seed=10 * k + load)
            size = 0.0 if label == "normal" else 0.007
            np.savez(d / f"{label}{'' if label == 'normal' else '007'}_load{load}_sim.npz", signal=sig, fs=12000,
                     rpm=rpm, label=label, size_in=size, or_position="@6" if label == "OR" else "", load_hp=load)
    return d


@pytest.fixture
def fake_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("edgevib_test_fake_trainer")
    mod.train = fake_train  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    for name in ("cnn", "nsae-lcn"):  # the registry's entries, pointed at the fake module
        monkeypatch.setitem(archs._REGISTRY, name, dataclasses.replace(archs.get(name), module=mod.__name__))


def test_train_then_eval(sim_dir: Path, tmp_path: Path, fake_trainer: None, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.onnx"
    rc = main(["models", "train", "--arch", "cnn", "--data", str(sim_dir), "--out", str(m), "--classes", CLASSES,
               "--epochs", "3", "--snr", "0"])
    assert rc == 0
    meta = read_meta(m)
    assert meta.classes == tuple(CLASSES.split(",")) and meta.arch == "logpower" and meta.window == 2048
    assert 0.9 <= meta.metrics["accuracy"] <= 1.0 and "snr0_accuracy" in meta.metrics
    assert f"accuracy {meta.metrics['accuracy']:.4f}" in capsys.readouterr().out

    out = tmp_path / "ev"
    rc = main(["models", "eval", "--model", str(m), "--data", str(sim_dir), "--split", "load", "--out-dir", str(out),
               "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert (out / "m.json").exists() and (out / "m_confusion.png").stat().st_size > 1000
    # the ONNX path agrees with the same model's numpy prediction on the same held-out windows
    recs = load_dir(sim_dir)
    model = fake_train(time_split(recs, 2048, 1024, 0.3, meta.classes)[0])
    _, te = load_split(recs, 2048, 1024, (3,), meta.classes)
    pred = model.predict_proba(te.x3d()).argmax(1)
    assert res["n_windows"] == len(te) and res["clean"]["recordings"]["total"] == 4
    assert res["clean"]["confusion"] == confusion(te.y, pred, 4).tolist()
    assert read_meta(m) == meta  # eval leaves the model alone


def test_build_zoo_writes_models_and_cards(sim_dir: Path, tmp_path: Path, fake_trainer: None) -> None:
    zoo = tmp_path / "zoo"
    assert main(["-q", "models", "build-zoo", "--data", str(sim_dir), "--out", str(zoo), "--classes", CLASSES]) == 0
    for name in ("cnn", "nsae_lcn"):
        metrics = json.loads((zoo / f"{name}.json").read_text())
        card = (zoo / f"{name}.md").read_text()
        acc = metrics["time_split"]["clean"]["accuracy"]
        assert f"{100 * acc:.1f} %" in card and "SNR -4 dB" in card and "load 3 held out" in card
        assert read_meta(zoo / f"{name}.onnx").metrics["time_accuracy"] == round(acc, 4)
        assert metrics["load_split"]["test_loads"] == [3] and (zoo / f"{name}_confusion.png").exists()
        assert "edgevib models build-zoo" in card


def test_errors_give_exit_codes(sim_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str], fake_trainer: None) -> None:
    args = ["models", "train", "--arch", "nsae-lcn", "--data", str(sim_dir), "--out", str(tmp_path / "m.onnx"),
            "--classes", CLASSES]
    assert main([*args, "--opt", "oops"]) == 2
    assert "--opt 'oops'" in capsys.readouterr().err
    assert main([*args[:5], str(tmp_path / "nowhere"), *args[6:]]) == 1
    assert "nowhere" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["models", "train", "--arch", "cnn", *args[4:]]) == 3
    assert "pip install 'edgevib[train]'" in capsys.readouterr().err
    assert main(["models"]) == 2


@pytest.mark.slow
def test_real_nsae_lcn_trainer_through_the_cli(sim_dir: Path, tmp_path: Path) -> None:
    m = tmp_path / "n.onnx"
    rc = main(["-q", "models", "train", "--arch", "nsae-lcn", "--data", str(sim_dir), "--out", str(m), "--classes",
               CLASSES, "--opt", "n_features=16", "--opt", "n_segments=2000", "--opt", "nsae_iters=20",
               "--opt", "clf_iters=50"])
    assert rc == 0
    meta = read_meta(m)
    assert meta.arch and meta.metrics["accuracy"] > 0.5  # 4 well-separated simulated classes
