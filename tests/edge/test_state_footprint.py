"""Per-sensor state that grows with what a sensor has sent: the anomaly baseline's rows and the
alerter's vote history (issue 15), with the same results as before."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.alerting import Alerter, AlertPolicy
from edgevib.edge.anomaly import AnomalyDetector, features


@pytest.mark.parametrize("n_baseline", [33, 200, 257])
def test_baseline_grows_with_its_rows_and_fits_the_same(n_baseline: int, rng: np.random.Generator) -> None:
    windows = [rng.normal(size=1024) * (1 + 0.1 * rng.random()) for _ in range(n_baseline)]
    det = AnomalyDetector(n_baseline=n_baseline)
    for k, w in enumerate(windows[:-1]):
        assert not det.update(w).ready
        assert det._baseline is not None and k + 1 <= len(det._baseline) <= max(16, 2 * (k + 1))
    det.update(windows[-1])  # the last row: fitted, rows freed
    assert det.ready and det._baseline is None
    ref = AnomalyDetector(n_baseline=n_baseline)
    ref.fit(np.array([features(w) for w in windows]))  # the rows at once
    assert det.mean is not None and ref.mean is not None
    assert det.mean.tobytes() == ref.mean.tobytes() and det.threshold == ref.threshold
    probe = rng.normal(size=1024) * 3
    assert det.update(probe).score == ref.update(probe).score


def test_alerter_keeps_the_last_n_windows() -> None:
    policy = AlertPolicy(k=2, n=3, m=2, p_on=0.8, p_off=0.5)
    a = Alerter(policy, clock=lambda: 0.0)
    events = [e for lbl, v in (("IR", 0.9), ("IR", 0.1), ("IR", 0.1), ("IR", 0.9)) for e in a.update(lbl, v)]
    assert events == [] and len(a._recent) == 3  # the first vote fell out of the last 3: one hit, not two
    b = Alerter(policy, clock=lambda: 0.0)
    for p in ([0.1, 0.85, 0.05], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.05, 0.85]):
        assert b.update_probs(np.array(p), ("normal", "IR", "OR")) == []
    assert len(b._rows) == len(b._recent) == 3
