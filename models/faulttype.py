"""The fault-type model (``normal``, ``B``, ``IR``, ``OR``) on order-domain envelope features.

It is a calibrated multinomial logistic regression over :data:`edgevib.models.orders.FEATURES`
(standardised), trained on every rig it is given plus simulated bearings of random geometry,
speed, resonance and noise (the only ball-fault data off CWRU). Each (rig, class) cell gets
equal total weight, so a rig with many recordings does not decide alone. A softmax
temperature is then fitted on *out-of-rig* predictions of the training rigs (each training
rig predicted by a model fitted on the others): calibration never sees a test rig.

The ONNX graph takes two inputs: ``x`` [N, 1, W] (the contract's waveform, unused by this
graph) and ``orders`` [N, F], which the agent computes from each sensor's bearing and
speed (``edgevib.aux_input = edgevib.orders/1``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(80, 3)); y = (X[:, 0] > 0).astype(int) * 3   # normal vs OR
>>> m = fit(X, y, np.ones(80))
>>> float(np.mean(m.predict_proba(X).argmax(1) == y)) > 0.9
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from edgevib.models.bearing import BearingGeometry
from edgevib.models.classes import FAULT_TYPES, fault_type
from edgevib.models.data import MODEL_FS, Recording, resample
from edgevib.models.errors import ModelsError
from edgevib.models.orders import FEATURES, KIND, fault_frequencies, order_features
from edgevib.models.simulate import simulate

log = logging.getLogger(__name__)
WINDOW, HOP = 8192, 4096  # 0.68 s at 12 kHz: 1.5 Hz lines, enough to part BPFO, 2xBSF and BPFI at 600 rpm
# The agent's hop (the model's edgevib.hop): a new window every 85 ms, so 3 of 5 windows
# confirm an alert 0.85 s after a fault's signal begins. A gateway short of CPU sets
# `hop = 4096` (1.37 s, a quarter of the feature work; docs/edge_footprint.md).
AGENT_HOP = 1024
CLASSES: tuple[str, ...] = FAULT_TYPES  # ("normal", "B", "IR", "OR")
_COMP = "models.faulttype"


@dataclass
class FeatureSet:
    """Order features of windows, with their class, rig and recording."""

    x: npt.NDArray[np.float32]  # [N, F]
    y: npt.NDArray[np.int64]  # index into CLASSES
    rig: npt.NDArray[np.str_]
    rec: npt.NDArray[np.int64]  # index into sources
    log_rms: npt.NDArray[np.float32]  # raw level: only for the "could gain alone do it?" baseline
    sources: list[str] = field(default_factory=list)

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureSet:
        return FeatureSet(self.x[mask], self.y[mask], self.rig[mask], self.rec[mask], self.log_rms[mask], self.sources)

    @staticmethod
    def concat(sets: Sequence[FeatureSet]) -> FeatureSet:
        sources: list[str] = []
        parts = []
        for s in sets:
            parts.append(FeatureSet(s.x, s.y, s.rig, s.rec + len(sources), s.log_rms, []))
            sources += s.sources
        return FeatureSet(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                          np.concatenate([p.rig for p in parts]), np.concatenate([p.rec for p in parts]),
                          np.concatenate([p.log_rms for p in parts]), sources)


def window_view(x: npt.NDArray[np.float32], window: int = WINDOW, hop: int = HOP) -> npt.NDArray[np.float32]:
    """[n, window] strided view of ``x`` (no copy)."""
    n = (len(x) - window) // hop + 1
    if n < 1:
        return np.empty((0, window), x.dtype)
    return np.lib.stride_tricks.sliding_window_view(x, window)[::hop][:n]


def features_of(recs: Sequence[Recording], window: int = WINDOW, hop: int = HOP) -> FeatureSet:
    """Order features of every window of ``recs`` (resampled to 12 kHz, each with its own bearing)."""
    xs, ys, rigs, ids, lr = [], [], [], [], []
    for i, r in enumerate(recs):
        r12 = resample(r, MODEL_FS)
        w = window_view(r12.signal, window, hop)
        if not len(w):
            continue
        xs.append(order_features(w, MODEL_FS, fault_frequencies(r.geometry, r.rpm)))
        ys.append(np.full(len(w), CLASSES.index(fault_type(r.class_name))))
        rigs.append(np.full(len(w), r.rig))
        ids.append(np.full(len(w), i))
        lr.append(np.log(np.std(w, axis=1) + 1e-12).astype(np.float32))
    if not xs:
        raise ModelsError(_COMP, f"no {window}-sample window in {len(recs)} recordings", "pass longer recordings")
    return FeatureSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(rigs), np.concatenate(ids),
                      np.concatenate(lr), [r.source for r in recs])


def newest_held_out(data: FeatureSet, frac: float) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Masks ``(held, gap)``: the newest ``frac`` of each recording's windows, and the one window
    before them that overlaps the first (hop = window / 2): train on ``~held & ~gap``, test on
    ``held``, and no sample is on both sides. Recordings of fewer than 3 windows stay whole.

    >>> fs = FeatureSet(np.zeros((10, 1), np.float32), np.zeros(10, np.int64), np.array(["r"] * 10),
    ...                 np.array([0] * 6 + [1] * 4), np.zeros(10, np.float32))
    >>> held, gap = newest_held_out(fs, 0.3)
    >>> held.astype(int).tolist(), gap.astype(int).tolist()
    ([0, 0, 0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    """
    if not 0 <= frac < 1:
        raise ModelsError(_COMP, f"held-out share {frac}", "hold out a share in [0, 1)")
    held = np.zeros(len(data.y), bool)
    gap = np.zeros(len(data.y), bool)
    for rec in np.unique(data.rec):
        idx = np.flatnonzero(data.rec == rec)  # in time order (features_of keeps it)
        n = min(int(np.ceil(len(idx) * frac)), len(idx) - 2) if len(idx) >= 3 else 0  # >= 1 window trains
        if n > 0:
            held[idx[-n:]] = True
            gap[idx[-n - 1]] = True
    return held, gap


def simulated(n: int = 240, seed: int = 0, duration_s: float = 2.0) -> list[Recording]:
    """``n`` simulated recordings (classes in turn) of random bearings, speeds, resonances and noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fault = CLASSES[i % 4]
        pitch = rng.uniform(25, 120)
        geo = BearingGeometry(int(rng.integers(7, 17)), pitch * rng.uniform(0.12, 0.28), pitch,
                              float(rng.choice([0.0, 0.0, 15.0, 25.0])), "simulated")
        rpm = float(rng.uniform(500, 3600))
        x = simulate(fault, duration_s=duration_s, rpm=rpm, geometry=geo, severity=float(10 ** rng.uniform(-1.3, 0.3)),
                     resonance_hz=float(rng.uniform(1500, 5000)), damping=float(rng.uniform(0.03, 0.12)),
                     noise_g=float(10 ** rng.uniform(-2, -0.5)), jitter=float(rng.uniform(0.005, 0.03)), seed=seed * 100003 + i)
        out.append(Recording(x, MODEL_FS, rpm, fault, 0.0, "", None, f"sim{seed}-{i}", "sim", geo))
    return out


@dataclass
class FaultTypeModel:
    """Standardisation, weights and temperature of the logistic model."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weight: npt.NDArray[np.float64]  # [F, C]
    bias: npt.NDArray[np.float64]  # [C]
    temperature: float = 1.0
    arch: str = "faulttype-lr"

    def logits(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return np.asarray((z @ self.weight + self.bias) / self.temperature)

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        return _softmax(self.logits(x)).astype(np.float32)

    def to_onnx(self, window: int = WINDOW) -> object:
        """ONNX graph: inputs ``x`` [N,1,W] and ``orders`` [N,F]; output ``probs`` [N,C]."""
        from edgevib.extras import require

        onnx = require("onnx", extra="train", feature="exporting the fault-type model")
        h = onnx.helper
        f, c = self.weight.shape
        inits = [
            onnx.numpy_helper.from_array(self.mean.astype(np.float32), "mean"),
            onnx.numpy_helper.from_array(self.scale.astype(np.float32), "scale"),
            onnx.numpy_helper.from_array((self.weight / self.temperature).astype(np.float32), "weight"),
            onnx.numpy_helper.from_array((self.bias / self.temperature).astype(np.float32), "bias"),
        ]
        nodes = [h.make_node("Sub", ["orders", "mean"], ["centred"]), h.make_node("Div", ["centred", "scale"], ["z"]),
                 h.make_node("MatMul", ["z", "weight"], ["zw"]), h.make_node("Add", ["zw", "bias"], ["logits"]),
                 h.make_node("Softmax", ["logits"], ["probs"], axis=1)]
        return two_input_graph(onnx, nodes, inits, "faulttype", f, c, window)


def two_input_graph(onnx: Any, nodes: list[Any], inits: list[Any], name: str, n_features: int, n_classes: int,
                    window: int) -> Any:
    """A checked ONNX model of the fault-type contract from ``nodes`` that read ``orders`` [N, F]
    and write ``probs`` [N, C]; ``x`` [N, 1, W] is declared (the contract's first input), unused."""
    h, tp = onnx.helper, onnx.TensorProto
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", tp.FLOAT, ["N", 1, window]),
                                       h.make_tensor_value_info("orders", tp.FLOAT, ["N", n_features])],
                         [h.make_tensor_value_info("probs", tp.FLOAT, ["N", n_classes])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="edgevib")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def cell_weights(y: npt.NDArray[np.int64], rig: npt.NDArray[np.str_], sim_weight: float = 1.0) -> npt.NDArray[np.float64]:
    """Equal total weight per (rig, class) cell; the simulated rig scaled by ``sim_weight``."""
    w = np.ones(len(y))
    for r in np.unique(rig):
        for c in np.unique(y):
            m = (rig == r) & (y == c)
            if m.any():
                w[m] = (sim_weight if r == "sim" else 1.0) / m.sum()
    return w


def fit(x: npt.ArrayLike, y: npt.ArrayLike, w: npt.ArrayLike, *, l2: float = 1e-2, iters: int = 600,
        lr: float = 0.5) -> FaultTypeModel:
    """Weighted multinomial logistic regression by full-batch gradient descent (deterministic)."""
    X, Y, W = np.asarray(x, np.float64), np.asarray(y, np.int64), np.asarray(w, np.float64)
    if X.ndim != 2 or len(X) != len(Y) or len(X) != len(W) or len(X) < 2:
        raise ModelsError(_COMP, f"features {X.shape}, labels {Y.shape}, weights {W.shape}",
                          "pass [N, F] features with N labels and N weights")
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-9
    z = (X - mean) / scale
    onehot = np.eye(len(CLASSES))[Y]
    wt, b = np.zeros((X.shape[1], len(CLASSES))), np.zeros(len(CLASSES))
    wn = W / W.sum()
    for _ in range(iters):
        g = (_softmax(z @ wt + b) - onehot) * wn[:, None]
        wt -= lr * (z.T @ g + l2 * wt)
        b -= lr * g.sum(axis=0)
    return FaultTypeModel(mean, scale, wt, b)


def fit_temperature(logits: npt.NDArray[np.float64], y: npt.NDArray[np.int64], w: npt.NDArray[np.float64]) -> float:
    """The softmax temperature minimising weighted log-loss (grid search, 0.5..8)."""
    best, best_t = math.inf, 1.0
    for t in np.exp(np.linspace(math.log(0.5), math.log(8.0), 61)):
        p = _softmax(logits / t)
        loss = float(-np.sum(w * np.log(p[np.arange(len(y)), y] + 1e-12)) / w.sum())
        if loss < best:
            best, best_t = loss, float(t)
    return best_t


def train(data: FeatureSet, *, sim_weight: float = 1.0, l2: float = 1e-2) -> FaultTypeModel:
    """Fit on all of ``data``; the temperature comes from leave-one-rig-out predictions inside it."""
    w = cell_weights(data.y, data.rig, sim_weight)
    model = fit(data.x, data.y, w, l2=l2)
    real = [r for r in np.unique(data.rig) if r != "sim"]
    if len(real) >= 2:
        logits, ys, ws = [], [], []
        for r in real:
            held = data.rig == r
            inner = fit(data.x[~held], data.y[~held], cell_weights(data.y[~held], data.rig[~held], sim_weight), l2=l2)
            logits.append(inner.logits(data.x[held]))
            ys.append(data.y[held])
            ws.append(cell_weights(data.y[held], data.rig[held]))
        model.temperature = fit_temperature(np.concatenate(logits), np.concatenate(ys), np.concatenate(ws))
    log.info("fault-type model: %d windows, %d features, temperature %.2f", len(data.y), data.x.shape[1],
             model.temperature)
    return model


__all__ = ["CLASSES", "FEATURES", "HOP", "two_input_graph", "KIND", "WINDOW", "FaultTypeModel", "FeatureSet", "cell_weights", "newest_held_out",
           "features_of", "fit", "fit_temperature", "simulated", "train", "window_view"]
