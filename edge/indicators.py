"""Condition indicators of one stretch of signal: what a reliability engineer trends.

Per sensor, once every ``indicators.interval_s`` (default 10 s), the agent takes the last
stretch of signal its windower keeps (``SensorWindower.recent()``: 2 s at the model's rate)
and computes (numpy only, no scipy: it runs on the gateway):

* acceleration RMS and peak (g, mean removed), crest factor (peak / RMS) and kurtosis
  (Pearson: 3 for Gaussian noise, ~1.5 for a sine, high for impacts);
* **velocity RMS in mm/s over 10-1000 Hz** (the ISO 10816-3 / 20816-3 broadband band), by
  integration in the frequency domain: the Hann-windowed acceleration (m/s^2) is Fourier
  transformed, each bin inside the band divided by ``j 2 pi f`` (bins outside set to 0), and
  the mean square taken with Parseval's theorem (corrected for the window's energy,
  ``mean(w^2) = 3/8``). A sine of amplitude ``a`` (m/s^2) at ``f`` Hz has velocity amplitude
  ``a / (2 pi f)``, so 1 g (9.80665 m/s^2) at 100 Hz is 15.61 mm/s peak, **11.04 mm/s RMS**;
* the **ISO 10816-3 zone** (A/B/C/D) of that velocity for the sensor's machine group and
  foundation (:data:`ISO_BOUNDARIES`);
* envelope levels at the bearing's fault frequencies: the line heights of the
  squared-envelope spectrum (``edgevib.models.orders.order_features``, the same features the
  fault-type model sees) at BPFO, BPFI, 2x BSF (ball defect rate) and FTF (cage), in dB
  over the spectrum's local median (a few dB on noise alone, the largest of the bins searched;
  a clear fault line 15-35 dB).

The stretch is a snapshot at the end of each interval, not the whole interval: what happens
between two snapshots is not in the peak or kurtosis (the classifier sees every window).

>>> import numpy as np
>>> fs = 12000.0
>>> t = np.arange(int(2 * fs)) / fs
>>> round(velocity_rms_mm_s(np.sin(2 * np.pi * 100 * t), fs), 2)  # 1 g at 100 Hz
11.04
>>> iso_zone(11.04, group=2, foundation="rigid"), iso_zone(2.0, group=1, foundation="flexible")
('D', 'A')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from edgevib.edge.errors import EdgeError
from edgevib.edge.evidence import window_stats
from edgevib.models.errors import ModelsError
from edgevib.models.orders import FEATURES, FaultHz, order_features

from edgevib.protocol import ENVELOPE_LINES as _WIRE_LINES
from edgevib.protocol import ISO_BOUNDARIES, ISO_FOUNDATIONS, ISO_GROUPS, ISO_ZONES

G = 9.80665  # m/s^2 per g (standard gravity)
VELOCITY_BAND_HZ = (10.0, 1000.0)  # ISO 10816-3 broadband velocity, machines above 600 r/min
# Envelope lines reported, name on the wire -> order_features feature.
ENVELOPE_LINES: dict[str, str] = {"bpfo": "bpfo1", "bpfi": "bpfi1", "bsf2": "re1", "ftf": "ftf"}
assert tuple(ENVELOPE_LINES) == _WIRE_LINES
_ENV_INDEX = {k: FEATURES.index(v) for k, v in ENVELOPE_LINES.items()}
_LN_TO_DB = 20.0 / math.log(10.0)  # order_features heights are ln(amplitude ratio)
MIN_SECONDS = 0.5  # below this the 10 Hz band edge and the envelope lines are not resolved


def velocity_rms_mm_s(x_g: npt.ArrayLike, fs: float, band: tuple[float, float] = VELOCITY_BAND_HZ) -> float:
    """RMS velocity (mm/s) within ``band`` of an acceleration signal in g sampled at ``fs`` Hz.

    Frequency-domain integration (module doc); the band's upper edge is clipped below
    Nyquist. Hann window: a line between two bins keeps its energy, and what leaks from a
    strong low-frequency line into the band's lowest bins (where 1/f^2 amplifies it) stays
    4-5 orders below a rectangular window's.
    """
    a = np.asarray(x_g, dtype=np.float64)
    n = len(a)
    if a.ndim != 1 or n < 16 or not fs > 0:
        raise EdgeError("edge.indicators", f"signal of shape {a.shape} at fs={fs}", "pass >= 16 samples at fs > 0")
    w = np.hanning(n)
    spec = np.fft.rfft((a - a.mean()) * w * G)  # m/s^2
    f = np.fft.rfftfreq(n, 1.0 / fs)
    lo, hi = band[0], min(band[1], fs / 2 * 0.999)
    inside = (f >= lo) & (f <= hi) & (f > 0)
    v = spec[inside] / (2j * np.pi * f[inside])  # m/s
    # Parseval for a real signal's one-sided spectrum: mean(x^2) = 2 sum |X_k|^2 / n^2 for
    # the bins strictly between DC and Nyquist (the band excludes both); / mean(w^2) undoes the window.
    ms = 2.0 * float(np.sum(v.real**2 + v.imag**2)) / (n * n) / float(np.mean(w * w))
    return math.sqrt(ms) * 1000.0


def iso_zone(vel_rms_mm_s: float, *, group: int = 2, foundation: str = "rigid") -> str:
    """ISO 10816-3 zone (A-D) of a broadband velocity RMS for a machine group and foundation."""
    try:
        bounds = ISO_BOUNDARIES[(group, foundation)]
    except KeyError:
        raise EdgeError("edge.indicators", f"iso_group={group!r}, iso_foundation={foundation!r}",
                        f"use iso_group one of {ISO_GROUPS} and iso_foundation one of {ISO_FOUNDATIONS}") from None
    for zone, upper in zip(ISO_ZONES, bounds, strict=False):
        if vel_rms_mm_s <= upper:
            return zone
    return "D"


@dataclass(frozen=True)
class Indicators:
    """The indicators of one stretch (units in the field names; see the module doc)."""

    duration_s: float
    acc_rms_g: float
    acc_peak_g: float
    crest: float
    kurtosis: float
    vel_rms_mm_s: float
    iso_zone: str
    env_db: dict[str, float]

    def fields(self) -> dict[str, Any]:
        """Rounded, JSON-ready, as :func:`edgevib.protocol.make_indicators` takes them."""
        return {"duration_s": round(self.duration_s, 4), "acc_rms_g": round(self.acc_rms_g, 5),
                "acc_peak_g": round(self.acc_peak_g, 5), "crest": round(self.crest, 3),
                "kurtosis": round(self.kurtosis, 3), "vel_rms_mm_s": round(self.vel_rms_mm_s, 3),
                "iso_zone": self.iso_zone, "env_db": {k: round(v, 2) for k, v in self.env_db.items()}}


def compute(x_g: npt.ArrayLike, fs: float, fault_hz: FaultHz, *, group: int = 2,
            foundation: str = "rigid") -> Indicators:
    """All indicators of one stretch of acceleration (g) sampled at ``fs`` Hz (>= 0.5 s)."""
    x = np.asarray(x_g, dtype=np.float64)
    if x.ndim != 1 or len(x) < MIN_SECONDS * fs or not np.all(np.isfinite(x)):
        raise EdgeError("edge.indicators", f"signal of shape {x.shape} at fs={fs}",
                        f"pass >= {MIN_SECONDS} s of finite samples")
    st = window_stats(x)
    vel = velocity_rms_mm_s(x, fs)
    if st["rms"] > 0:
        try:
            feats = order_features(x[None, :], fs, fault_hz)[0]
        except ModelsError as exc:
            raise EdgeError("edge.indicators", exc.problem, exc.fix) from exc
        env = {k: max(0.0, float(feats[i]) * _LN_TO_DB) for k, i in _ENV_INDEX.items()}
    else:  # a flat signal has no envelope (order_features would divide by zero RMS)
        env = dict.fromkeys(_ENV_INDEX, 0.0)
    return Indicators(len(x) / fs, st["rms"], st["peak"], st["crest"], st["kurtosis"], vel,
                      iso_zone(vel, group=group, foundation=foundation), env)
