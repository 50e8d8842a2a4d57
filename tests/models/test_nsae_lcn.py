"""NSAE-LCN: analytic gradients, numpy/ONNX agreement, input checks, a short real-data train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.optimize
from edgevib.models import nsae_lcn
from edgevib.models.errors import DataError
from edgevib.models.nsae_lcn import NSAELCN, nsae_cost, softmax_cost
from edgevib.models.split import WindowSet

W = 512  # short windows keep the unit tests fast; the real model uses 2048


def _toy_windows(rng: np.random.Generator, n: int = 40, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: a 700 Hz vs a 2.2 kHz tone (+-4 %: no multiple of 12 kHz / stride) at 12 kHz, random phase and gain, in noise."""
    t = np.arange(w) / 12000.0
    y = np.arange(n) % 2
    f = np.where(y == 0, 700.0, 2200.0)[:, None]
    x = rng.uniform(0.5, 2.0, (n, 1)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (n, 1)))
    return (x + 0.3 * rng.standard_normal((n, w))).astype(np.float32), y.astype(np.int64)


def _ws(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> WindowSet:
    n = len(x)
    return WindowSet(x, y, classes, np.zeros(n, np.int64), np.arange(n) * x.shape[1], ("toy",), 12000.0,
                     np.full(n, 1797.0))


FAST: dict[str, Any] = dict(seg_len=32, n_features=12, stride=4, n_segments=2000, nsae_iters=60, clf_iters=100,
            lowpass_taps=15)


@pytest.fixture(scope="module")
def toy_model() -> NSAELCN:
    x, y = _toy_windows(np.random.default_rng(0))
    return nsae_lcn.train(_ws(x, y, ("low", "high")), seed=0, **FAST)


def test_nsae_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 8))
    theta = 0.3 * rng.standard_normal(5 * 8)
    err = scipy.optimize.check_grad(lambda t: nsae_cost(t, X, 5, 0.2, 0.7)[0],
                                    lambda t: nsae_cost(t, X, 5, 0.2, 0.7)[1], theta)
    assert err < 1e-5 * max(1.0, float(np.linalg.norm(nsae_cost(theta, X, 5, 0.2, 0.7)[1])))


def test_softmax_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(4)
    F, Y = rng.standard_normal((30, 6)), np.eye(3)[rng.integers(0, 3, 30)]
    theta = 0.1 * rng.standard_normal(6 * 3 + 3)
    err = scipy.optimize.check_grad(lambda t: softmax_cost(t, F, Y, 0.05)[0],
                                    lambda t: softmax_cost(t, F, Y, 0.05)[1], theta)
    assert err < 1e-6


def test_nsae_learns_near_orthonormal_filters(toy_model: NSAELCN) -> None:
    f = toy_model.filters.astype(np.float64)
    assert f.shape == (12, 32)
    # rows stay distinct: no two filters collapse onto the same direction
    g = f @ f.T / np.outer(np.linalg.norm(f, axis=1), np.linalg.norm(f, axis=1))
    assert np.max(np.abs(g - np.diag(np.diag(g)))) < 0.95


def test_toy_problem_is_learned_and_gain_invariant(toy_model: NSAELCN) -> None:
    x, y = _toy_windows(np.random.default_rng(9), n=30)
    p = toy_model.predict_proba(x[:, None, :])
    assert p.dtype == np.float32 and p.shape == (30, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(p.argmax(axis=1) == y) >= 0.9
    np.testing.assert_allclose(toy_model.predict_proba(7.5 * x[:, None, :]), p, atol=1e-5)


def test_onnx_matches_numpy(toy_model: NSAELCN) -> None:
    import onnxruntime as ort
    proto = toy_model.to_onnx()
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["probs"]
    assert proto.opset_import[0].version == 17
    ops = [n.op_type for n in proto.graph.node]
    assert {"Conv", "Relu", "ReduceMean", "MatMul", "Softmax"} <= set(ops)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x, _ = _toy_windows(np.random.default_rng(5), n=7)  # odd batch: N is dynamic
    (got,) = sess.run(["probs"], {"x": x[:, None, :]})
    np.testing.assert_allclose(got, toy_model.predict_proba(x[:, None, :]), atol=2e-5)


def test_onnx_without_lowpass_matches_numpy() -> None:
    import onnxruntime as ort
    x, y = _toy_windows(np.random.default_rng(1), n=20)
    m = nsae_lcn.train(_ws(x, y, ("low", "high")), seed=1, **{**FAST, "lowpass_hz": None, "nsae_iters": 10})
    assert m.fir is None
    sess = ort.InferenceSession(m.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["probs"], {"x": x[:3, None, :]})
    np.testing.assert_allclose(got, m.predict_proba(x[:3, None, :]), atol=2e-5)


def test_change_speed_scales_frequencies() -> None:
    t = np.arange(4096) / 12000.0
    x = np.sin(2 * np.pi * 1000.0 * t)[None, :]
    for factor in (0.96, 1.04):
        y = nsae_lcn.change_speed(x, factor)[0]
        peak = np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y)), 1 << 16))) * 12000.0 / (1 << 16)
        assert abs(peak - 1000.0 * factor) < 2.0


@pytest.mark.parametrize("bad", [np.zeros((4, W), np.float32), np.zeros((4, 2, W), np.float32),
                                 np.zeros((0, 1, W), np.float32), np.zeros((4, 1, W + 1), np.float32)])
def test_bad_input_shapes_raise_clear_errors(toy_model: NSAELCN, bad: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"models\.nsae_lcn: .*fix: pass"):
        toy_model.predict_proba(bad)


def test_nan_input_raises(toy_model: NSAELCN) -> None:
    x = np.zeros((2, 1, W), np.float32)
    x[1, 0, 5] = np.nan
    with pytest.raises(DataError, match="1 NaN/inf"):
        toy_model.predict_proba(x)


def test_bad_training_options_raise() -> None:
    x, y = _toy_windows(np.random.default_rng(0), n=6)
    with pytest.raises(DataError, match="unknown option"):
        nsae_lcn.train(_ws(x, y, ("a", "b")), n_filters=3)
    with pytest.raises(DataError, match="seg_len=0"):
        nsae_lcn.train(_ws(x, y, ("a", "b")), seg_len=0)
    with pytest.raises(DataError, match="indexing the 2 classes"):
        nsae_lcn.train(_ws(x, np.full(6, 2, np.int64), ("a", "b")), **FAST)
    with pytest.raises(DataError, match="at least two classes"):
        nsae_lcn.train(_ws(x, np.zeros(6, np.int64), ("a", "b")), **FAST)


def test_training_is_seeded_and_reports_progress() -> None:
    x, y = _toy_windows(np.random.default_rng(2), n=12)
    seen: list[tuple[int, int]] = []
    opts = {**FAST, "nsae_iters": 5, "clf_iters": 5}
    a = nsae_lcn.train(_ws(x, y, ("a", "b")), seed=7, progress=lambda d, t, m="": seen.append((d, t)), **opts)
    b = nsae_lcn.train(_ws(x, y, ("a", "b")), seed=7, **opts)
    np.testing.assert_array_equal(a.filters, b.filters)
    assert seen and seen[-1] == (10, 10)


@pytest.mark.data
@pytest.mark.slow
def test_real_cwru_short_train_beats_chance_on_time_split(cwru_dir: Path) -> None:
    from edgevib.models.data import load_dir
    from edgevib.models.split import time_split

    classes = ("normal", "IR007", "B014", "OR021")
    recs = [r for r in load_dir(cwru_dir, classes, fs=12000.0) if r.load_hp in (0, 1)]
    train, test = time_split(recs, 2048, 2048, classes=classes)
    model = nsae_lcn.train(train, seed=0, n_segments=3000, nsae_iters=40, clf_iters=100)
    assert model.arch == "nsae-lcn" and model.classes == classes
    acc = float(np.mean(model.predict(test.x3d()) == test.y))
    assert acc >= 0.9, f"time-split accuracy {acc:.3f} on {len(test)} windows (chance 0.25)"
