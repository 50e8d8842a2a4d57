"""The gateway's hot path is numpy only: same numbers as the scipy code it replaced, and the
agent (imported, CLI parser built, model loaded) never imports scipy (issue 15)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from edgevib.edge import anomaly, evidence
from edgevib.edge.windowing import StreamResampler, lowpass_taps

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


@pytest.mark.parametrize(("up", "down"), [(1, 4), (15, 32), (3, 2), (2, 1), (160, 147), (147, 160)])
def test_numpy_resampler_matches_scipy(up: int, down: int, rng: np.random.Generator) -> None:
    signal = pytest.importorskip("scipy.signal")
    half = 10 * max(up, down)
    np.testing.assert_allclose(lowpass_taps(half, 1.0 / max(up, down)),
                               signal.firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)),
                               rtol=0, atol=1e-15)
    x = rng.normal(size=30_000)
    ref = signal.resample_poly(x, up, down)
    r = StreamResampler(up, down)
    sizes, parts, i, k = [3, 4096, 1, 517, 2000], [], 0, 0
    while i < len(x):
        parts.append(r.push(x[i : i + sizes[k % len(sizes)]]))
        i += sizes[k % len(sizes)]
        k += 1
    y = np.concatenate(parts)
    assert y.dtype == np.float32 and len(y) >= len(ref) - half // down - 2  # the tail awaits input
    # float32 output: within one float32 rounding of scipy's float64 result
    np.testing.assert_allclose(y, ref[: len(y)], rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(ref).max())


def test_resampler_reset_starts_a_fresh_stream(rng: np.random.Generator) -> None:
    x = rng.normal(size=5000)
    r = StreamResampler(1, 4)
    a = r.push(x)
    r.push(rng.normal(size=3000))
    r.reset()
    np.testing.assert_array_equal(r.push(x), a)


def _scipy_band_envelopes(x: np.ndarray, fs: float, bands: list[tuple[float, float]]) -> list[np.ndarray]:
    fft = pytest.importorskip("scipy.fft")
    n = len(x)
    spec = fft.fft(x - x.mean())
    f = np.abs(fft.fftfreq(n, 1 / fs))
    pos = np.zeros(n, bool)
    pos[1 : (n + 1) // 2] = True
    return [np.abs(fft.ifft(np.where(pos & (f >= lo) & (f <= hi), 2 * spec, 0))) for lo, hi in bands]


def test_evidence_numpy_fft_matches_scipy(rng: np.random.Generator) -> None:
    fft = pytest.importorskip("scipy.fft")
    fs = 12000.0
    x = rng.normal(size=12000) + np.sin(2 * np.pi * 3000 * np.arange(12000) / fs) * (rng.random(12000) > 0.99)
    bands = evidence._bands(fs, 500.0)
    for got, ref in zip(evidence.band_envelopes(x, fs, bands), _scipy_band_envelopes(x, fs, bands), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    env = np.abs(x)
    freqs, amp = evidence.envelope_spectrum(env, fs, pad_to=24000)
    e = env - env.mean()
    ref_amp = np.abs(fft.rfft(e * np.hanning(len(e)), 24000)) * 2 / len(e)
    np.testing.assert_allclose(freqs, fft.rfftfreq(24000, 1 / fs), rtol=0, atol=1e-9)
    np.testing.assert_allclose(amp, ref_amp, rtol=1e-10, atol=1e-14)


def test_anomaly_features_numpy_fft_matches_scipy(rng: np.random.Generator) -> None:
    fft = pytest.importorskip("scipy.fft")
    x = rng.normal(size=2048)
    v = x - x.mean()
    power = np.abs(fft.rfft(v * np.hanning(len(v)))) ** 2
    starts = np.array([b[0] for b in np.array_split(np.arange(1, 1025), 8)])
    ref_bands = np.log10(np.add.reduceat(power, starts) + 1e-20 * len(v))
    np.testing.assert_allclose(anomaly.features(x)[:8], ref_bands, rtol=1e-12, atol=1e-12)


def test_agent_import_and_model_load_never_import_scipy() -> None:
    code = textwrap.dedent(f"""
        import sys
        import edgevib.edge.agent, edgevib.edge.runtime, edgevib.edge.mqtt
        from edgevib.cli import build_parser
        from edgevib.edge.runtime import OnnxModel
        build_parser("agent")  # what `edgevib agent` imports
        m = OnnxModel({str(ZOO / "cnn_small.onnx")!r})
        assert m.meta.window > 0
        bad = sorted(k for k in sys.modules if k == "scipy" or k.startswith("scipy."))
        print("SCIPY", bad[:5])
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SCIPY []" in r.stdout


@pytest.mark.parametrize("sizes", [[4096], [333, 5000, 17], [30000]])
def test_history_ring_holds_the_last_seconds(sizes: list[int], rng: np.random.Generator) -> None:
    from edgevib.edge.windowing import SensorWindower

    from edgevib.protocol.frames import Frame

    x = rng.normal(size=60_000).astype(np.float32)
    w = SensorWindower(2048, 1024, 12000.0, history_s=0.5)
    i = k = 0
    while i < len(x):
        w.push(Frame(k, 0, 12000.0, x[i : i + sizes[k % len(sizes)]]))
        i, k = min(i + sizes[k % len(sizes)], len(x)), k + 1
        np.testing.assert_array_equal(w.recent(), x[max(0, i - w.history_len) : i])
    w.push(Frame(k + 5, 0, 12000.0, x[:100]))  # a gap resets the stream and its history
    np.testing.assert_array_equal(w.recent(), x[:100])


def test_edge_commands_work_without_scipy(tmp_path: Path) -> None:
    """An edge-only install has no scipy (it is in the train/cloud extras): the agent and the
    publisher still run, and a CWRU .mat replay names the extra that adds it."""
    np.savez(tmp_path / "r.npz", signal=np.zeros(100, np.float32), fs=12000.0)
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        sys.modules["scipy"] = None  # any `import scipy...` now fails as if it were not installed
        from edgevib.cli import main
        for cmd in ("agent", "stream"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main([cmd, "--help"])
                except SystemExit as e:
                    assert e.code == 0, (cmd, e.code)
            assert "needs: pip install" not in out.getvalue() and "--broker" in out.getvalue(), cmd
        from edgevib.edge.stream import load_replay
        assert len(load_replay({str(tmp_path / "r.npz")!r}).signal) == 100
        from edgevib.errors import MissingExtraError
        try:
            load_replay({str(tmp_path / "x.mat")!r})
        except MissingExtraError as e:
            assert "edgevib[train]" in str(e)
        else:
            raise AssertionError("a .mat replay without scipy must name the extra")
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
