"""The simulator's physics: envelope spectra peak at the fault frequency of the geometry."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from edgevib.models.bearing import CWRU_DE_6205, DG_6308, BearingGeometry
from edgevib.models.errors import ModelsError
from edgevib.models.simulate import Simulator, simulate


def envelope_peak_hz(x: np.ndarray, fs: float, lo: float = 20.0, hi: float = 400.0) -> float:
    env = np.abs(scipy.signal.hilbert(x))
    spec = np.abs(np.fft.rfft((env - env.mean()) * np.hanning(len(env))))
    f = np.fft.rfftfreq(len(env), 1 / fs)
    band = (f > lo) & (f < hi)
    return float(f[band][np.argmax(spec[band])])


@pytest.mark.parametrize(("fault", "attr"), [("IR", "bpfi"), ("OR", "bpfo"), ("B", "rolling_element")])
@pytest.mark.parametrize(("geometry", "rpm"), [(CWRU_DE_6205, 1797.0), (DG_6308, 1480.0)])
def test_envelope_spectrum_peaks_at_the_fault_frequency(fault: str, attr: str, geometry: BearingGeometry,
                                                        rpm: float) -> None:
    fs = 12000.0
    x = simulate(fault, fs=fs, duration_s=2.0, rpm=rpm, geometry=geometry, seed=7)
    expected = getattr(geometry.frequencies(rpm), attr)
    assert envelope_peak_hz(x, fs) == pytest.approx(expected, abs=2.0)  # 0.5 Hz bins, ~1.5% jitter


def test_normal_has_no_fault_peak() -> None:
    x = simulate("normal", duration_s=2.0, rpm=1797, seed=7)
    f = CWRU_DE_6205.frequencies(1797)
    assert all(abs(envelope_peak_hz(x, 12000.0) - v) > 3 for v in (f.bpfi, f.bpfo, f.rolling_element))


def test_chunked_stream_equals_one_shot() -> None:
    sim = Simulator("IR", seed=5)
    rng = np.random.default_rng(0)
    chunks, total = [], 0
    while total < 24000:
        k = int(rng.integers(1, 3000))
        chunks.append(sim.next_samples(k))
        total += k
    whole = Simulator("IR", seed=5).next_samples(total)
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-6)
    assert sim.time_s == pytest.approx(total / 12000)


def test_onset_severity_growth_and_seed() -> None:
    x = simulate("OR", duration_s=2.0, onset_s=1.0, noise_g=0.02, seed=1)
    before, after = x[:11000].std(), x[13000:].std()
    assert after > 3 * before
    big = simulate("OR", duration_s=1.0, severity=2.0, seed=1)
    assert big.std() > 1.5 * simulate("OR", duration_s=1.0, seed=1).std()
    grow = simulate("IR", duration_s=4.0, growth_per_s=1.0, seed=2)
    assert grow[-12000:].std() > 2 * grow[:12000].std()
    np.testing.assert_array_equal(simulate("B", seed=3), simulate("B", seed=3))
    assert not np.array_equal(simulate("B", seed=3), simulate("B", seed=4))


def test_speed_change_moves_the_peak() -> None:
    sim = Simulator("IR", seed=0)
    sim.next_samples(6000)
    sim.rpm = 1200.0
    x = sim.next_samples(24000)
    assert envelope_peak_hz(x, 12000.0) == pytest.approx(CWRU_DE_6205.frequencies(1200).bpfi, abs=2.0)


@pytest.mark.parametrize("kw", [{"fault": "XR"}, {"resonance_hz": 7000.0}, {"damping": 0.0}, {"rpm": -1.0}])
def test_bad_parameters(kw: dict[str, object]) -> None:
    with pytest.raises(ModelsError, match="models.simulate"):
        simulate(**kw)
