"""The batched order features equal the per-window definition the fault-type model was trained on.

``order_features`` takes one fault-frequency set per row (the agent's batches mix sensors and
estimated speeds) in one vectorised pass. The model's weights were fitted on the per-window
definition below (``models/orders.py`` as of the shipped ``zoo/faulttype.onnx``, frozen
here verbatim): on real recordings of two rigs, at mixed speeds and bearings, every feature
must agree to float32 rounding, and each row must not depend on the others in its batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from edgevib.models.bearing import CWRU_DE_6205, DG_6308, BearingGeometry
from edgevib.models.errors import ModelsError
from edgevib.models.orders import (
    FEATURES,
    FaultHz,
    _band_env2,
    _bands,
    _peaks,
    _targets,
    fault_frequencies,
    order_features,
)

W = 8192


def _reference(x: npt.NDArray[np.float64], fs: float, freqs: FaultHz) -> npt.NDArray[np.float32]:
    """The per-window definition (one speed for all rows), frozen from the trained model's code."""
    v = np.asarray(x, dtype=np.float64)
    n_win, n = v.shape
    v = v - v.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(v * v, axis=1, keepdims=True))
    v = v / np.where(rms > 0, rms, 1.0)
    spec = np.fft.rfft(v, axis=1)
    df = fs / n
    min_bw = 2.2 * 3 * max(freqs.bpfo, freqs.bpfi, freqs.re) + freqs.fr
    bands = _bands(n, fs, min_bw)
    kurt = np.empty((len(bands), n_win))
    for b, (k0, k1) in enumerate(bands):
        env2 = _band_env2(spec[:, k0:k1])
        kurt[b] = np.mean(env2 * env2, axis=1) / np.maximum(np.mean(env2, axis=1) ** 2, 1e-30) - 2.0
    best = np.argmax(kurt, axis=0)
    out = np.zeros((n_win, len(FEATURES)), np.float64)
    targets = _targets(freqs)
    for b in np.unique(best):
        rows = np.flatnonzero(best == b)
        k0, k1 = bands[b]
        env2 = _band_env2(spec[rows, k0:k1])
        m = env2.shape[1]
        e = env2 - env2.mean(axis=1, keepdims=True)
        amp = np.abs(np.fft.rfft(e * np.hanning(m), 2 * m, axis=1))
        la = np.log(amp + 1e-12 * (amp.max(axis=1, keepdims=True) + 1e-30))
        fa = np.fft.rfftfreq(2 * m, 1.0 / (m * df))
        for j, name in enumerate(FEATURES[:17]):
            f0, tol = targets[name]
            out[rows, j] = _peak_reference(fa, la, f0, tol)
    v2 = v * v
    out[:, 17] = np.log(np.mean(v2 * v2, axis=1))
    out[:, 18] = np.log(1.0 + np.maximum(kurt[best, np.arange(n_win)], 1e-3))
    out[:, 19] = np.log(np.max(np.abs(v), axis=1))
    return out.astype(np.float32)


def _peak_reference(fa: npt.NDArray[np.float64], la: npt.NDArray[np.float64], f0: float,
                    tol: float) -> npt.NDArray[np.float64]:
    dfa = fa[1] - fa[0]
    if not 0 < f0 < fa[-1] * 0.95:
        return np.zeros(la.shape[0])
    half = max(f0 * tol, 1.5 * dfa)
    inside = (fa >= f0 - half) & (fa <= f0 + half)
    w = max(f0 * 0.15, 8.0, 6 * dfa)
    around = (fa >= f0 - w) & (fa <= f0 + w) & ~inside
    if around.sum() < 3:
        around = ~inside
    return np.asarray(la[:, inside].max(axis=1) - np.median(la[:, around], axis=1))


def _windows(path: Path, n: int) -> tuple[npt.NDArray[np.float64], float, float, BearingGeometry]:
    with np.load(path, allow_pickle=False) as z:
        x, fs, rpm = z["signal"].astype(np.float64), float(z["fs"]), float(z["rpm"])
        geo = (BearingGeometry(int(z["n_balls"]), float(z["ball_diameter"]), float(z["pitch_diameter"]),
                               float(z["contact_angle_deg"])) if "n_balls" in z.files else CWRU_DE_6205)
    starts = np.linspace(0, x.size - W, n).astype(int)  # spread over the recording
    return np.stack([x[s:s + W] for s in starts]), fs, rpm, geo


def _check(x: npt.NDArray[np.float64], fs: float, freqs: list[FaultHz]) -> None:
    batched = order_features(x, fs, freqs)
    ref = np.concatenate([_reference(x[i:i + 1], fs, f) for i, f in enumerate(freqs)])
    assert batched.shape == ref.shape == (len(x), len(FEATURES))
    np.testing.assert_allclose(batched, ref, rtol=1e-6, atol=1e-6)


def test_real_cwru_windows_at_mixed_speeds_match_the_per_window_definition(cwru_dir: Path) -> None:
    rng = np.random.default_rng(5)
    xs, freqs = [], []
    for name in ("IR007_load0_12k_DE_105.npz", "B014_load1_12k_DE_186.npz", "OR021at6_load2_12k_DE_236.npz",
                 "IR021_load3_12k_DE_212.npz"):
        x, fs, rpm, geo = _windows(cwru_dir / name, 6)
        xs.append(x)
        # as an agent's batch: each sensor at its own estimated speed, a little off the nominal
        freqs += [fault_frequencies(geo, rpm * (1 + rng.uniform(-0.03, 0.03))) for _ in range(len(x))]
    _check(np.concatenate(xs), 12000.0, freqs)


def test_real_other_rig_windows_and_mixed_band_sets_match(bearings_dir: Path) -> None:
    # 51.2 kHz at 600 and 1200 rpm, and the 1200 rpm windows once more taken for 3000 rpm (no
    # band narrower than 1.6 kHz then): two band sets in one batch, grouped inside
    xs, freqs = [], []
    for name, scale in (("hit-sb/IR2_600rpm.npz", 1.0), ("hit-sb/IR2_1200rpm.npz", 1.0),
                        ("hit-sb/IR2_1200rpm.npz", 2.5)):
        x, fs, rpm, geo = _windows(bearings_dir / name, 4)
        xs.append(x)
        freqs += [fault_frequencies(geo, rpm * scale)] * len(x)
    assert fs == 51200.0
    assert len({tuple(_bands(W, fs, 2.2 * 3 * max(f.bpfo, f.bpfi, f.re) + f.fr)) for f in freqs}) == 2
    _check(np.concatenate(xs), fs, freqs)


@pytest.mark.parametrize("geometry", [CWRU_DE_6205, DG_6308])
def test_extreme_speeds_take_the_same_edge_cases(geometry: BearingGeometry) -> None:
    # 30 rpm: lines below the envelope's resolution; 20,000 rpm: no band is wide enough (the
    # whole range); 90,000 rpm: the harmonics leave the envelope spectrum (those features are 0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, W)) + np.sin(np.arange(W) * 0.3)[None, :]
    freqs = [fault_frequencies(geometry, rpm) for rpm in (30.0, 600.0, 1797.0, 6000.0, 20000.0, 90000.0)]
    _check(x, 12000.0, freqs)
    assert (order_features(x, 12000.0, freqs)[-1] == 0).sum() >= 3


def test_vectorised_peaks_take_the_whole_spectrum_fallback_like_the_reference() -> None:
    # a tolerance wider than the surrounding window leaves < 3 bins around: the reference then
    # takes the median of the whole spectrum outside the peak window
    rng = np.random.default_rng(2)
    fa = np.fft.rfftfreq(64, 1.0 / 200.0)
    la = rng.normal(size=(4, fa.size))
    f0, tol = np.array([20.0, 35.0, 50.0, 97.0]), np.array([0.6, 0.02, 0.6, 0.02])
    want = np.array([_peak_reference(fa, la[i:i + 1], f0[i], tol[i])[0] for i in range(4)])
    np.testing.assert_array_equal(_peaks(fa, la, f0[:, None], tol[:, None])[:, 0], want)


def test_a_row_does_not_depend_on_its_batch(cwru_dir: Path) -> None:
    x, _, rpm, geo = _windows(cwru_dir / "OR007at6_load0_12k_DE_130.npz", 8)
    f = [fault_frequencies(geo, rpm * s) for s in np.linspace(0.95, 1.05, 8)]
    alone = np.concatenate([order_features(x[i:i + 1], 12000.0, f[i]) for i in range(8)])
    np.testing.assert_array_equal(order_features(x, 12000.0, f)[::-1], order_features(x[::-1], 12000.0, f[::-1]))
    np.testing.assert_allclose(order_features(x, 12000.0, f), alone, rtol=1e-6, atol=1e-6)
    with pytest.raises(ModelsError, match="one per window"):
        order_features(x, 12000.0, f[:3])
