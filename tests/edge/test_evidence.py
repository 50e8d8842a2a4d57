"""Envelope-spectrum physics check on bearings no model saw, simulated and real."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.errors import EdgeError
from edgevib.edge.evidence import EvidenceConfig, analyze, peak_snr, window_stats
from edgevib.models.bearing import AC_7206, CWRU_FE_6203, DG_6308, BearingGeometry
from edgevib.models.simulate import simulate
from scipy.signal import resample_poly


def test_window_stats_known_signals(rng: np.random.Generator) -> None:
    s = window_stats(np.sin(2 * np.pi * np.arange(12000) / 100))
    assert s["rms"] == pytest.approx(1 / np.sqrt(2), rel=1e-3)
    assert s["crest"] == pytest.approx(np.sqrt(2), rel=1e-3) and s["kurtosis"] == pytest.approx(1.5, rel=1e-2)
    g = window_stats(rng.normal(size=100_000))
    assert g["kurtosis"] == pytest.approx(3.0, abs=0.1)
    spiky = np.zeros(12000)
    spiky[::1000] = 1.0
    assert window_stats(spiky)["kurtosis"] > 100


def test_peak_snr_finds_a_shifted_line() -> None:
    fs, n = 2000.0, 4000
    freqs = np.fft.rfftfreq(n, 1 / fs)
    amp = np.abs(np.random.default_rng(0).normal(size=len(freqs))) + 0.0
    amp[np.argmin(np.abs(freqs - 101.0))] = 30.0  # 1% slip from 100 Hz
    p = peak_snr(freqs, amp, 100.0, tol=0.015)
    assert p.found_hz == pytest.approx(101.0, abs=0.5) and p.snr_db > 20
    assert peak_snr(freqs, amp, 300.0, tol=0.015).snr_db < 6


CASES = [(g, rpm, res) for g, rpm, res in [
    (CWRU_FE_6203, 1200.0, 2500.0), (DG_6308, 1800.0, 3800.0), (AC_7206, 2400.0, 4500.0),
    (DG_6308, 900.0, 2000.0), (AC_7206, 1500.0, 3000.0), (CWRU_FE_6203, 2700.0, 4200.0)]]


@pytest.mark.parametrize("fault", ["normal", "B", "IR", "OR"])
def test_names_fault_type_on_unseen_simulated_bearings(fault: str) -> None:
    hits = 0
    for k, (geom, rpm, res) in enumerate(CASES):
        x = simulate(fault, fs=12000.0, duration_s=1.0, rpm=rpm, geometry=geom, severity=0.5,
                     resonance_hz=res, noise_g=0.1, seed=100 + k)
        ev = analyze(x, 12000.0, EvidenceConfig(geometry=geom, rpm=rpm))
        hits += ev.fault_type == fault
        assert ev.agrees_with("IR007") == (ev.fault_type == "IR")
    assert hits >= 5, f"{fault}: {hits}/6 named correctly"


def test_wrong_rpm_breaks_the_physics_check() -> None:
    # The check reads fault frequencies, so a 15% wrong speed must lose an obvious fault.
    x = simulate("OR", fs=12000.0, duration_s=1.0, rpm=1800.0, geometry=DG_6308, severity=0.5, seed=3)
    assert analyze(x, 12000.0, EvidenceConfig(geometry=DG_6308, rpm=1800.0)).fault_type == "OR"
    assert analyze(x, 12000.0, EvidenceConfig(geometry=DG_6308, rpm=1530.0)).fault_type != "OR"


def test_evidence_dict_is_json_ready() -> None:
    x = simulate("IR", fs=12000.0, duration_s=1.0, rpm=1500.0, geometry=AC_7206, severity=0.5, seed=4)
    d = analyze(x, 12000.0, EvidenceConfig(geometry=AC_7206, rpm=1500.0)).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["physics"] == "IR"


def test_bad_input_is_named() -> None:
    with pytest.raises(EdgeError, match="edge.evidence"):
        analyze(np.zeros(10), 12000.0)
    with pytest.raises(EdgeError, match="rpm"):
        analyze(np.zeros(12000), 12000.0, EvidenceConfig(rpm=0.0))


@pytest.mark.data
def test_real_cwru_standard_classes(cwru_dir: Path) -> None:
    """Fault type on real recordings (never used to fit anything): normal, IR, OR@6 at loads 0-3."""
    geom = BearingGeometry(9, 0.3126, 1.537, 0.0)
    right: dict[str, list[bool]] = {"normal": [], "IR": [], "OR": []}
    for row in csv.DictReader(open(cwru_dir / "manifest.csv")):
        lab, size = row["label"], row["size_in"]
        if lab not in right or (lab == "OR" and row["or_position"] != "@6") or size in ("0.028", "0.014"):
            continue
        d = np.load(cwru_dir / row["file"])
        x, fs = d["signal"].astype(np.float64), float(d["fs"])
        if fs == 48000.0:
            x, fs = resample_poly(x, 1, 4), 12000.0
        rpm = float(row["rpm"]) if row["rpm"] not in ("", "nan") else 1772.0
        for s in (0, 36000):
            ev = analyze(x[s : s + 12000], fs, EvidenceConfig(geometry=geom, rpm=rpm))
            right[lab].append(ev.fault_type == lab)
    for lab, r in right.items():
        assert len(r) >= 6 and np.mean(r) >= 0.8, f"{lab}: {np.mean(r):.2f} of {len(r)}"


def test_shape_moments_equal_scipy_stats() -> None:
    from edgevib.edge.evidence import shape_moments
    from scipy import stats

    v = np.random.default_rng(3).standard_t(4, 5000)
    v = v - v.mean()
    skew, kurt = shape_moments(v)
    assert skew == pytest.approx(float(stats.skew(v)), rel=1e-9)
    assert kurt == pytest.approx(float(stats.kurtosis(v, fisher=False)), rel=1e-9)
    assert shape_moments(np.zeros(10)) == (0.0, 0.0)


def test_band_kurtosis_on_short_grids_equals_the_full_rate_kurtosis(rng: np.random.Generator) -> None:
    # the kurtogram reads each band at baseband on a grid > 2x its width (issue 15: the physics
    # check runs in the batch that raises an alert); it must pick what the full-rate one picked
    from edgevib.edge.evidence import _bands, band_envelopes, band_kurtosis
    for n, fs in [(12000, 12000.0), (12001, 12000.0), (4096, 25600.0), (9000, 48000.0)]:
        x = rng.normal(size=n) + 15 * (rng.random(n) > 0.997)
        bands = _bands(fs, 400.0) + [(0.0, fs / 2), (fs / 4, fs / 4)]  # full span; one bin or none
        ref = [float(np.mean(e**4) / np.mean(e**2) ** 2) - 2.0 if np.any(e) else 0.0
               for e in band_envelopes(x, fs, bands)]
        np.testing.assert_allclose(band_kurtosis(x, fs, bands), ref, rtol=1e-9, atol=1e-12)


def test_peak_snr_equals_its_masked_definition(rng: np.random.Generator) -> None:
    # peak_snr selects by index ranges; the definition is by frequency masks
    freqs = np.fft.rfftfreq(24000, 1 / 12000.0)
    for _ in range(200):
        amp, f0, tol = np.abs(rng.normal(size=len(freqs))), float(rng.uniform(1, 6100)), float(rng.choice([0.015, 0.3]))
        half = max(f0 * tol, 1.5 * 0.5)
        inside = (freqs >= f0 - half) & (freqs <= f0 + half)
        got = peak_snr(freqs, amp, f0, tol)
        if f0 + half >= freqs[-1]:
            assert got.snr_db == 0.0 and got.found_hz == f0
            continue
        w = max(f0 * 0.15, 8.0, 3.0)
        around = (freqs >= f0 - w) & (freqs <= f0 + w) & ~inside
        floor = np.median(amp[around]) if around.sum() >= 3 else np.median(amp)
        i = np.flatnonzero(inside)[np.argmax(amp[inside])]
        bias = 10 * np.log10(max(np.log(inside.sum()), np.log(2)) / np.log(2))
        assert got.found_hz == freqs[i]
        assert got.snr_db == pytest.approx(max(0.0, 20 * np.log10(amp[i] / floor) - bias), abs=1e-9)
