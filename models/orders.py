"""Order-domain envelope features: what a bearing fault looks like on *any* bearing and speed.

A localised bearing defect makes impacts at a rate fixed by the bearing's geometry and the
shaft speed (BPFO, BPFI, twice ball spin, with cage or shaft sidebands). Expressed in those
rates, the signature is the same on every machine; expressed in Hz, or as a raw waveform,
it is not. So the fault-type model does not look at the waveform's shape: it looks at the
squared-envelope spectrum *sampled at the bearing's own fault frequencies*.

For each window (mean removed, scaled to unit RMS, so gain and units drop out):

1. choose the resonance band where impacts stand out: the band (from a half-overlapping
   1/1, 1/2, 1/4 ... of the Nyquist range, no narrower than the fault family needs) whose
   analytic envelope has the highest kurtosis (a kurtogram-lite);
2. demodulate that band at baseband (only its FFT bins, so a narrow band costs little) and
   take the squared envelope's spectrum;
3. for each target frequency (``FEATURES``), the peak's height above the local median of the
   spectrum, in natural-log units, searched within ``TOL`` (relative, for slip);
4. add three shape figures of the window: log kurtosis, log of the band kurtosis, log crest.

Everything is numpy (no scipy): the agent computes this on the gateway for each window.
Invariants: the result is the same for ``x`` and ``a * x + c`` (any gain and offset), and
depends on the speed and geometry only through the fault frequencies in Hz.

>>> import numpy as np
>>> from edgevib.models.bearing import CWRU_DE_6205
>>> from edgevib.models.simulate import simulate
>>> fr = fault_frequencies(CWRU_DE_6205, 1797.0)
>>> x = simulate("OR", duration_s=1.0, rpm=1797.0, seed=1)[:8192]
>>> f = order_features(x[None, :], 12000.0, fr)
>>> f.shape == (1, len(FEATURES))
True
>>> bool(f[0, FEATURES.index("bpfo1")] > 1.0)  # a clear BPFO line
True
>>> bool(np.allclose(f, order_features(3 * x[None, :] + 1, 12000.0, fr), atol=1e-4))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from edgevib.models.bearing import BearingGeometry
from edgevib.models.errors import ModelsError

KIND = "edgevib.orders/1"  # the name a model's second input declares (docs/design.md)
TOL = 0.02  # relative search tolerance around each fault frequency (slip, speed error)
FEATURES: tuple[str, ...] = (
    "bpfo1", "bpfo2", "bpfo3", "bpfi1", "bpfi2", "bpfi3", "re1", "re2", "re3", "bsf1",
    "bpfi-fr", "bpfi+fr", "re-ftf", "re+ftf", "fr1", "fr2", "ftf",
    "log_kurtosis", "log_band_kurtosis", "log_crest",
)
_COMP = "models.orders"


@dataclass(frozen=True)
class FaultHz:
    """Shaft rate and fault frequencies of one bearing at one speed, in Hz."""

    fr: float
    bpfo: float
    bpfi: float
    bsf: float
    ftf: float

    @property
    def re(self) -> float:
        """Rolling-element (ball defect) impact rate: twice ball spin."""
        return 2.0 * self.bsf


def fault_frequencies(geometry: BearingGeometry, rpm: float) -> FaultHz:
    """:class:`FaultHz` of ``geometry`` at ``rpm``."""
    if not (math.isfinite(rpm) and rpm > 0):
        raise ModelsError(_COMP, f"rpm={rpm}", "pass the shaft speed in revolutions per minute (> 0)")
    f = geometry.frequencies(rpm)
    return FaultHz(rpm / 60.0, f.bpfo, f.bpfi, f.bsf, f.ftf)


def _bands(n: int, fs: float, min_bw: float, levels: int = 4) -> list[tuple[int, int]]:
    """FFT bin ranges of half-overlapping bands, widest first, at most ``levels`` widths."""
    nyq, df, out = fs / 2, fs / n, []
    bw = nyq / 2
    for _ in range(levels):
        if bw < min_bw:
            break
        lo = bw / 2
        while lo + bw <= nyq * 0.98:
            out.append((int(lo / df), int((lo + bw) / df)))
            lo += bw / 2
        bw /= 2
    # a fault family too fast for any band of this rate: the whole range, honestly coarse
    return out or [(max(1, int(0.01 * nyq / df)), int(0.98 * nyq / df))]


def _targets(f: FaultHz) -> dict[str, tuple[float, float]]:
    """name -> (frequency Hz, relative tolerance); cage lines get a wider one (they wander)."""
    t = {f"bpfo{h}": (h * f.bpfo, TOL) for h in (1, 2, 3)}
    t.update({f"bpfi{h}": (h * f.bpfi, TOL) for h in (1, 2, 3)})
    t.update({f"re{h}": (h * f.re, TOL) for h in (1, 2, 3)})
    t.update({"bsf1": (f.bsf, TOL), "bpfi-fr": (f.bpfi - f.fr, TOL), "bpfi+fr": (f.bpfi + f.fr, TOL),
              "re-ftf": (f.re - f.ftf, TOL), "re+ftf": (f.re + f.ftf, TOL),
              "fr1": (f.fr, TOL), "fr2": (2 * f.fr, TOL), "ftf": (f.ftf, 2.5 * TOL)})
    return t


def order_features(x: npt.ArrayLike, fs: float, freqs: FaultHz | Sequence[FaultHz]) -> npt.NDArray[np.float32]:
    """float32 [N, len(FEATURES)] for windows ``x`` [N, W] sampled at ``fs`` (see module doc).

    ``freqs``: one :class:`FaultHz` for every row, or one per row (the agent's batches mix
    sensors and speeds). Either way it is one vectorised pass over the batch: rows are grouped
    only by their band set (the same for one bearing over any modest speed range), and each
    row gets exactly the numbers it would get alone (no row depends on another)."""
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] < 256 or v.shape[0] < 1:
        raise ModelsError(_COMP, f"windows of shape {v.shape}", "pass float [N, W] with W >= 256")
    per_row = [freqs] * v.shape[0] if isinstance(freqs, FaultHz) else list(freqs)
    if len(per_row) != v.shape[0]:
        raise ModelsError(_COMP, f"{len(per_row)} fault-frequency sets for {v.shape[0]} windows",
                          "pass one FaultHz, or one per window")
    if not np.all(np.isfinite(v)):
        raise ModelsError(_COMP, "windows hold NaN or inf", "drop windows with non-finite samples")
    n_win, n = v.shape
    v = v - v.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(v * v, axis=1, keepdims=True))
    v = v / np.where(rms > 0, rms, 1.0)
    spec = np.fft.rfft(v, axis=1)
    out = np.zeros((n_win, len(FEATURES)), np.float64)
    band_kurt = np.empty(n_win)
    # the band must pass the sidebands up to the 3rd harmonic of the fastest family
    band_sets: dict[FaultHz, tuple[tuple[int, int], ...]] = {}  # a batch holds a few distinct speeds
    groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
    for i, f in enumerate(per_row):
        if f not in band_sets:
            band_sets[f] = tuple(_bands(n, fs, 2.2 * 3 * max(f.bpfo, f.bpfi, f.re) + f.fr))
        groups.setdefault(band_sets[f], []).append(i)
    for bands, idx in groups.items():
        rows = np.asarray(idx)
        band_kurt[rows] = _envelope_lines(spec if len(rows) == n_win else spec[rows], fs / n, list(bands),
                                          [per_row[i] for i in idx], out, rows)
    v2 = v * v
    k4 = np.mean(v2 * v2, axis=1)  # not v**4: numpy pow is 7x slower than two multiplies (43 % of this call)
    out[:, 17] = np.log(k4)
    out[:, 18] = np.log(1.0 + np.maximum(band_kurt, 1e-3))
    out[:, 19] = np.log(np.max(np.abs(v), axis=1))
    return out.astype(np.float32)


def _envelope_lines(spec: npt.NDArray[np.complex128], df: float, bands: list[tuple[int, int]],
                    freqs: list[FaultHz], out: npt.NDArray[np.float64], rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """Steps 1-3 for rows sharing one band set: writes ``out[rows, :17]``, returns the chosen
    band's kurtosis per row."""
    n_win = spec.shape[0]
    best = np.zeros(n_win, np.intp)
    best_k = np.full(n_win, -np.inf)
    kept: dict[int, npt.NDArray[np.float64]] = {}  # envelope length -> each row's best envelope so far
    for b, (k0, k1) in enumerate(bands):
        env2 = _band_env2(spec[:, k0:k1])
        kurt = np.mean(env2 * env2, axis=1) / np.maximum(np.mean(env2, axis=1) ** 2, 1e-30) - 2.0
        better = kurt > best_k  # strict: the first of equal maxima wins, as argmax
        if not better.any():
            continue
        best[better], best_k[better] = b, kurt[better]
        # keep the winning envelopes instead of computing them again for step 2
        store = kept.setdefault(env2.shape[1], np.empty((n_win, env2.shape[1])))
        store[better] = env2[better]
    # Step 2 per envelope length, not per band: bands of one width share the envelope
    # spectrum's length and frequency grid, so one FFT call and one peak search serve them all.
    m_of = np.array([1 << max(4, (2 * (k1 - k0) - 1).bit_length()) for k0, k1 in bands])[best]
    for m in np.unique(m_of):
        sel = np.flatnonzero(m_of == m)
        env2 = kept[int(m)][sel]
        e = env2 - env2.mean(axis=1, keepdims=True)
        amp = np.abs(np.fft.rfft(e * np.hanning(m), 2 * m, axis=1))
        la = np.log(amp + 1e-12 * (amp.max(axis=1, keepdims=True) + 1e-30))
        fa = np.fft.rfftfreq(2 * m, 1.0 / (m * df))
        uniq: dict[FaultHz, npt.NDArray[np.float64]] = {}  # (frequency, tolerance) per feature
        for i in sel:
            if freqs[i] not in uniq:
                t = _targets(freqs[i])
                uniq[freqs[i]] = np.array([t[name] for name in FEATURES[:17]])
        ft = np.stack([uniq[freqs[i]] for i in sel])  # [rows, 17, 2]
        out[rows[sel], :17] = _peaks(fa, la, ft[:, :, 0], ft[:, :, 1])
    return best_k

def _band_env2(band: npt.NDArray[np.complex128]) -> npt.NDArray[np.float64]:
    """Squared envelope of the analytic signal of one band's bins, at a reduced rate."""
    k = band.shape[1]
    m = 1 << max(4, (2 * k - 1).bit_length())  # >= 2x the band's bins: no aliasing of |z|^2
    z = np.fft.ifft(band, m, axis=1)
    return np.asarray(z.real**2 + z.imag**2)


def _peak(fa: npt.NDArray[np.float64], la: npt.NDArray[np.float64], f0: float, tol: float) -> npt.NDArray[np.float64]:
    """Height of the largest line within ``f0 (1 +- tol)`` above the surrounding median."""
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


def _peaks(fa: npt.NDArray[np.float64], la: npt.NDArray[np.float64], f0: npt.NDArray[np.float64],
           tol: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """:func:`_peak` for each row of ``la`` [R, K] at each of its own targets ``f0``, ``tol``
    [R, F], in one pass over all (row, target) pairs: each pair's columns are gathered into one
    row of a [pairs, L] array, then the same masks (the same comparisons on the same ``fa``),
    the same max, and the median as numpy takes it (the middle value, or the mean of the two
    middle values), so the result is the reference's to the last bit."""
    n_rows, n_t = f0.shape
    f, t = f0.ravel(), tol.ravel()
    row = np.repeat(np.arange(n_rows), n_t)
    dfa = fa[1] - fa[0]
    res = np.zeros(f.size)
    ok = (f > 0) & (f < fa[-1] * 0.95)
    if not ok.any():
        return res.reshape(n_rows, n_t)
    half = np.maximum(f * t, 1.5 * dfa)
    w = np.maximum(np.maximum(f * 0.15, 8.0), 6 * dfa)
    reach = np.maximum(w, half)
    # only the columns the pair's window can reach (fa is ascending); pairs left out get none
    c0 = np.where(ok, np.searchsorted(fa, f - reach, "left"), 0)
    c1 = np.where(ok, np.searchsorted(fa, f + reach, "right"), 0)
    cols = c0[:, None] + np.arange(max(1, int((c1 - c0).max())))[None, :]
    valid = cols < c1[:, None]
    cols = np.minimum(cols, fa.size - 1)
    fs_, ls_ = fa[cols], la[row[:, None], cols]
    fc, hc, wc = f[:, None], half[:, None], w[:, None]
    inside = valid & (fs_ >= fc - hc) & (fs_ <= fc + hc)
    around = valid & (fs_ >= fc - wc) & (fs_ <= fc + wc) & ~inside
    count = around.sum(axis=1)
    top = np.where(inside, ls_, -np.inf).max(axis=1)
    srt = np.sort(np.where(around, ls_, np.inf), axis=1)  # each pair's values first, ascending
    r = np.arange(f.size)
    lo_mid, hi_mid = srt[r, np.maximum(count - 1, 0) // 2], srt[r, count // 2]
    med = np.where(count % 2 == 1, hi_mid, (lo_mid + hi_mid) / 2)
    res = np.where(ok, top - med, 0.0)
    for i in np.flatnonzero(ok & (count < 3)):  # too few bins around: the rare whole-spectrum case
        res[i] = _peak(fa, la[row[i] : row[i] + 1], float(f[i]), float(t[i]))[0]
    return res.reshape(n_rows, n_t)
