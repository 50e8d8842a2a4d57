"""Class-independent anomaly score: distance from this sensor's own healthy baseline.

The first ``n_baseline`` windows after start-up are taken as healthy. Each window
becomes a small feature vector (log energies of ``n_bands`` frequency bands, log
RMS, log kurtosis, crest factor); the baseline gives a mean and a shrunk
covariance, and the score is the Mahalanobis distance. The threshold comes from the
baseline's own distances (the larger of ``margin`` x their 99th percentile and
median + 6 robust standard deviations), so it adapts to each machine. A fault, or a
disturbance no classifier knows, moves the features and scores above 1.0 (= threshold).

Alert on it with the same state machine as faults, so one odd window never alerts:
``Alerter(AlertPolicy(p_on=1.0, p_off=0.8)).update("anomaly", result.ratio)``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from edgevib.edge.errors import EdgeError
from edgevib.edge.evidence import shape_moments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnomalyResult:
    """``ratio`` = score / threshold (>= 1 is anomalous); ``ready`` is False while learning."""

    score: float
    threshold: float
    ratio: float
    ready: bool


@functools.lru_cache(maxsize=8)
def _layout(n: int, n_bands: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Hann window and band start indices for length ``n`` (cached: the agent calls
    :func:`features` per window, and rebuilding these dominated its cost)."""
    starts = np.array([b[0] for b in np.array_split(np.arange(1, n // 2 + 1), n_bands)], dtype=np.intp)
    return np.hanning(n), starts


def features(x: npt.ArrayLike, n_bands: int = 8) -> npt.NDArray[np.float64]:
    """Log band energies (equal-width bands up to Nyquist), log RMS, log kurtosis, crest factor."""
    v = np.asarray(x, dtype=np.float64)
    v = v - v.mean()
    window, starts = _layout(len(v), n_bands)
    spec = np.fft.rfft(v * window)
    power = spec.real**2 + spec.imag**2
    bands = np.add.reduceat(power, starts)
    rms = float(np.sqrt(np.mean(v * v)))
    # A flat (dead) signal has no kurtosis: give it the floor, which scores far from any baseline.
    kurt = shape_moments(v)[1] if rms > 1e-12 else 0.0
    rms += 1e-12
    tiny = 1e-20 * len(v)
    return np.concatenate([np.log10(bands + tiny),
                           [np.log10(rms), np.log10(max(kurt, 1e-3)), float(np.max(np.abs(v))) / rms]])


class AnomalyDetector:
    """One sensor's healthy baseline and Mahalanobis score; feed it every window."""

    def __init__(self, n_baseline: int = 200, n_bands: int = 8, margin: float = 1.25, shrinkage: float = 0.1) -> None:
        if n_baseline < 3 * (n_bands + 3):
            raise EdgeError("edge.anomaly", f"n_baseline={n_baseline} for {n_bands + 3} features",
                            f"learn from at least {3 * (n_bands + 3)} windows")
        if margin < 1 or not 0 <= shrinkage <= 1:
            raise EdgeError("edge.anomaly", f"margin={margin}, shrinkage={shrinkage}", "use margin >= 1, 0 <= shrinkage <= 1")
        self.n_baseline, self.n_bands, self.margin, self.shrinkage = n_baseline, n_bands, margin, shrinkage
        # Baseline rows in one array (200 x 11 float64 = 17.6 kB per sensor once full, against ~40 kB
        # as a list of 200 small arrays), grown by doubling from 16 rows: a sensor costs for the rows
        # it has given so far (at anomaly_every = 4 the baseline fills over a minute); freed after fit.
        self._baseline: npt.NDArray[np.float64] | None = None
        self._n_seen = 0
        self.mean: npt.NDArray[np.float64] | None = None
        self._prec: npt.NDArray[np.float64] | None = None
        self.threshold = float("inf")
        self.last_ratio: float | None = None  # the latest scored window's ratio (None while learning)

    @property
    def ready(self) -> bool:
        return self.mean is not None

    def fit(self, feats: npt.NDArray[np.float64]) -> None:
        """Learn the baseline from feature rows [N, F] (normally called automatically)."""
        mean = feats.mean(axis=0)
        cov = np.cov(feats, rowvar=False)
        # Shrink towards the diagonal: a few hundred windows give a noisy 11x11 covariance.
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(mean))
        self.mean, self._prec = mean, np.linalg.inv(cov)
        d = np.array([self._distance(f) for f in feats])
        mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
        self.threshold = max(self.margin * float(np.quantile(d, 0.99)), float(np.median(d)) + 6 * mad)
        log.info("anomaly baseline learned from %d windows: threshold %.2f", len(feats), self.threshold)

    def _distance(self, f: npt.NDArray[np.float64]) -> float:
        assert self.mean is not None and self._prec is not None
        z = f - self.mean
        return float(np.sqrt(max(float(z @ self._prec @ z), 0.0)))

    def update(self, window: npt.ArrayLike) -> AnomalyResult:
        """Score one window; the first ``n_baseline`` windows build the baseline (ratio 0)."""
        f = features(window, self.n_bands)
        if not np.all(np.isfinite(f)):
            raise EdgeError("edge.anomaly", "window gives non-finite features", "drop windows with NaN/inf samples")
        if not self.ready:
            if self._baseline is None or self._n_seen == len(self._baseline):
                grown = np.empty((min(self.n_baseline, max(16, 2 * self._n_seen)), len(f)))
                if self._baseline is not None:
                    grown[: self._n_seen] = self._baseline
                self._baseline = grown
            self._baseline[self._n_seen] = f
            self._n_seen += 1
            if self._n_seen >= self.n_baseline:
                self.fit(self._baseline)
                self._baseline, self._n_seen = None, 0
            return AnomalyResult(0.0, self.threshold, 0.0, False)
        d = self._distance(f)
        self.last_ratio = d / self.threshold
        return AnomalyResult(d, self.threshold, self.last_ratio, True)
