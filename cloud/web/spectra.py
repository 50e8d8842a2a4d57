"""The dashboard's sensor view: waveform, spectrum and envelope spectrum of one window, with
the bearing's fault frequencies as markers (numpy/scipy, server-side).

The envelope is taken in the band :func:`edgevib.edge.evidence.analyze` picks (highest
envelope kurtosis), so the operator sees the same demodulation the agent's physics check used.

>>> import numpy as np
>>> v = sensor_view(np.random.default_rng(0).normal(size=12000), 12000.0, 1797.0)
>>> sorted(v["markers"]), round(v["markers"]["BPFO"], 2)
(['BPFI', 'BPFO', 'BSF', 'FTF', 'shaft'], 107.36)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.fft
from edgevib.edge.evidence import EvidenceConfig, analyze, band_envelopes, envelope_spectrum
from edgevib.models.bearing import CWRU_DE_6205, BearingGeometry

MAX_POINTS = 1500  # per curve sent to the browser


def _reduce(f: npt.NDArray[np.float64], a: npt.NDArray[np.float64], n: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most ``n`` points, keeping each block's maximum (a peak must not vanish in decimation)."""
    if len(a) <= n:
        return [round(float(x), 3) for x in f], [float(x) for x in a]
    k = int(np.ceil(len(a) / n))
    m = len(a) // k * k
    blocks = a[:m].reshape(-1, k)
    idx = np.arange(0, m, k) + np.argmax(blocks, axis=1)
    return [round(float(x), 3) for x in f[idx]], [float(x) for x in a[idx]]


def markers(rpm: float, geometry: BearingGeometry = CWRU_DE_6205) -> dict[str, float]:
    """Fault frequencies in Hz at ``rpm``: BPFO, BPFI, BSF, FTF and the shaft rate."""
    f = geometry.frequencies(rpm)
    return {"shaft": rpm / 60.0, "BPFO": f.bpfo, "BPFI": f.bpfi, "BSF": f.bsf, "FTF": f.ftf}


def sensor_view(x: npt.ArrayLike, fs: float, rpm: float, geometry: BearingGeometry = CWRU_DE_6205) -> dict[str, Any]:
    """JSON-ready curves for one window of samples at ``fs`` Hz."""
    v = np.asarray(x, dtype=np.float64)
    v = v - v.mean()
    t_step = max(1, len(v) // MAX_POINTS)
    amp = np.abs(scipy.fft.rfft(v * np.hanning(len(v)))) * 2 / len(v)
    freqs = scipy.fft.rfftfreq(len(v), 1 / fs)
    mk = markers(rpm, geometry)
    ev = analyze(v, fs, EvidenceConfig(geometry=geometry, rpm=rpm))
    env = band_envelopes(v, fs, [ev.band_hz])[0]
    ef, ea = envelope_spectrum(env, fs, pad_to=int(2 * fs))  # 0.5 Hz bins
    keep = ef <= min(fs / 2, 4.0 * max(mk["BPFI"], mk["BPFO"], 2 * mk["BSF"]))
    sf, sa = _reduce(freqs, amp)
    esf, esa = _reduce(ef[keep], ea[keep])
    return {
        "fs": fs, "rpm": rpm, "geometry": geometry.name, "n": len(v),
        "waveform": {"t": [round(i / fs, 6) for i in range(0, len(v), t_step)], "x": [float(s) for s in v[::t_step]]},
        "spectrum": {"f": sf, "a": sa},
        "envelope": {"f": esf, "a": esa, "band_hz": [round(ev.band_hz[0], 1), round(ev.band_hz[1], 1)]},
        "markers": mk,
        "physics": ev.fault_type, "scores_db": {k: round(s, 2) for k, s in ev.scores_db.items()},
        "stats": {k: round(s, 4) for k, s in ev.stats.items()},
    }


WATERFALL_BINS = 400  # frequency points per row of the waterfall


def envelope_row(x: npt.ArrayLike, fs: float, rpm: float, geometry: BearingGeometry, f_max: float,
                 bins: int = WATERFALL_BINS) -> tuple[list[float], tuple[float, float]]:
    """One window's envelope spectrum on the fixed grid ``linspace(0, f_max, bins)`` (each grid
    point the largest bin within half a grid step, so a fault line survives the reduction), and
    the demodulation band used (:func:`sensor_view`'s band choice)."""
    v = np.asarray(x, dtype=np.float64)
    v = v - v.mean()
    ev = analyze(v, fs, EvidenceConfig(geometry=geometry, rpm=rpm))
    env = band_envelopes(v, fs, [ev.band_hz])[0]
    ef, ea = envelope_spectrum(env, fs, pad_to=int(2 * fs))
    grid = np.linspace(0.0, f_max, bins)
    step = grid[1] - grid[0]
    lo = np.clip(np.searchsorted(ef, grid - step / 2), 0, len(ef) - 1)
    hi = np.maximum(np.searchsorted(ef, grid + step / 2), lo + 1)
    row = [float(ea[i:j].max()) for i, j in zip(lo, hi, strict=True)]
    return row, (round(ev.band_hz[0], 1), round(ev.band_hz[1], 1))
