"""Anomaly score: healthy stays low, faults and unseen disturbances score high."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.anomaly import AnomalyDetector, features
from edgevib.edge.errors import EdgeError
from edgevib.models.bearing import DG_6308
from edgevib.models.simulate import Simulator

W = 2048


def _windows(sim: Simulator, n: int) -> list[np.ndarray]:
    return [sim.next_samples(W) for _ in range(n)]


@pytest.fixture(scope="module")
def trained() -> tuple[AnomalyDetector, Simulator]:
    sim = Simulator("normal", rpm=1500.0, geometry=DG_6308, noise_g=0.05, seed=11)
    det = AnomalyDetector(n_baseline=150)
    results = [det.update(w) for w in _windows(sim, 150)]
    assert not any(r.ready for r in results[:-1]) and det.ready
    return det, sim


def test_healthy_scores_low(trained: tuple[AnomalyDetector, Simulator]) -> None:
    det, sim = trained
    ratios = [det.update(w).ratio for w in _windows(sim, 150)]
    assert np.mean(np.array(ratios) >= 1.0) <= 0.02 and np.median(ratios) < 0.5


@pytest.mark.parametrize("fault", ["IR", "OR", "B"])
def test_fault_scores_high(trained: tuple[AnomalyDetector, Simulator], fault: str) -> None:
    det, _ = trained
    sim = Simulator(fault, rpm=1500.0, geometry=DG_6308, noise_g=0.05, severity=0.3, seed=12)
    ratios = [det.update(w).ratio for w in _windows(sim, 40)]
    assert np.mean(np.array(ratios) >= 1.0) >= 0.9


def test_unseen_disturbances_score_high(trained: tuple[AnomalyDetector, Simulator], rng: np.random.Generator) -> None:
    det, sim = trained
    t = np.arange(W) / 12000.0
    hum = [w + 0.1 * np.sin(2 * np.pi * 1234.0 * t) for w in _windows(sim, 20)]  # a new tone
    noisy = [w + rng.normal(0, 0.1, W) for w in _windows(sim, 20)]  # a loose sensor mount
    for ws in (hum, noisy):
        assert np.mean([det.update(w).ratio >= 1.0 for w in ws]) >= 0.9


def test_features_and_errors() -> None:
    f = features(np.random.default_rng(0).normal(size=W))
    assert f.shape == (11,) and np.all(np.isfinite(f))
    assert np.all(np.isfinite(features(np.zeros(W))))
    with pytest.raises(EdgeError, match="n_baseline"):
        AnomalyDetector(n_baseline=5)
    det = AnomalyDetector(n_baseline=33)
    with pytest.raises(EdgeError, match="non-finite"):
        det.update(np.full(W, np.nan))


def test_anomaly_alert_raises_once(trained: tuple[AnomalyDetector, Simulator]) -> None:
    from edgevib.edge.alerting import Alerter, AlertPolicy
    det, sim = trained
    alerter = Alerter(AlertPolicy(p_on=1.0, p_off=0.8, k=3, n=5, m=5), clock=lambda: 0.0)
    healthy = [e for w in _windows(sim, 30) for e in alerter.update("anomaly", det.update(w).ratio)]
    assert healthy == []
    bad = Simulator("OR", rpm=1500.0, geometry=DG_6308, noise_g=0.05, severity=0.3, seed=13)
    events = [e for w in _windows(bad, 30) for e in alerter.update("anomaly", det.update(w).ratio)]
    assert [(e.state, e.label) for e in events] == [("raised", "anomaly")]


def test_features_equal_a_direct_computation_for_any_length() -> None:
    from edgevib.edge.anomaly import features

    rng = np.random.default_rng(7)
    for n in (2048, 2047, 100, 17):
        x = rng.standard_normal(n) * 0.3
        v = x - x.mean()
        power = np.abs(np.fft.rfft(v * np.hanning(n))) ** 2
        bands = [b.sum() for b in np.array_split(power[1:], 8)]
        rms = np.sqrt(np.mean(v * v))
        kurt = np.mean(v**4) / np.mean(v**2) ** 2
        want = [*np.log10(np.array(bands) + 1e-20 * n), np.log10(rms + 1e-12), np.log10(kurt),
                np.max(np.abs(v)) / (rms + 1e-12)]
        assert np.allclose(features(x), want, rtol=1e-9, atol=1e-12)
