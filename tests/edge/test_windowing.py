"""Windowing: chunked resampling equals one-shot, window layout, gap/reorder resets."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.errors import WindowingError
from edgevib.edge.windowing import SensorWindower, StreamResampler, rate_ratio
from scipy.signal import resample_poly

from edgevib.protocol.frames import Frame


def _frames(x: np.ndarray, fs: float, sizes: list[int], seq0: int = 0) -> list[Frame]:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(Frame(seq0 + k, int(i * 1e9 / fs), fs, x[i : i + n].astype(np.float32)))
        i += n
        k += 1
    return out


@pytest.mark.parametrize(("fs_in", "up", "down"), [(48000.0, 1, 4), (25600.0, 15, 32), (8000.0, 3, 2)])
def test_chunked_resampling_equals_one_shot(fs_in: float, up: int, down: int, rng: np.random.Generator) -> None:
    assert rate_ratio(fs_in, 12000.0) == (up, down)
    x = rng.normal(size=20_000)
    ref = resample_poly(x, up, down)
    r = StreamResampler(up, down)
    sizes = [1, 7, 333, 1000, 4096, 50]
    parts, i, k = [], 0, 0
    while i < len(x):
        parts.append(r.push(x[i : i + sizes[k % len(sizes)]]))
        i += sizes[k % len(sizes)]
        k += 1
    y = np.concatenate(parts)
    # Everything emitted is final; only the tail that needs future input is missing.
    assert len(ref) - 20 * max(up, down) // down - 2 <= len(y) <= len(ref)
    np.testing.assert_allclose(y, ref[: len(y)], atol=1e-5)


def test_rate_ratio_rejects_odd_rates() -> None:
    # no fraction p/q with p, q <= 1000 within 1e-4: ratios beyond 1000:1 either way
    for odd in (13e6, 5.0):
        with pytest.raises(WindowingError, match="edge.windowing"):
            rate_ratio(odd, 12000.0)
    assert rate_ratio(97656.0, 12000.0) == (29, 236)  # none <= 160 fits: the longer fallback filter
    # MFPT's 48,828 Hz: 29/118 is 8 ppm off, far below slip; accepted rather than dropped
    assert rate_ratio(48828.0, 12000.0) == (29, 118)
    with pytest.raises(WindowingError):
        SensorWindower(window=0)


def test_windows_are_contiguous_slices_same_rate(rng: np.random.Generator) -> None:
    x = rng.normal(size=10_000).astype(np.float32)
    w = SensorWindower(window=2048, hop=1024, model_fs=12000.0)
    got = [t for f in _frames(x, 12000.0, [500, 1300, 77]) for t in w.push_timed(f)]
    assert len(got) == (10_000 - 2048) // 1024 + 1 == w.stats.windows
    for k, (t_ns, win) in enumerate(got):
        assert win.dtype == np.float32 and win.shape == (2048,)
        np.testing.assert_array_equal(win, x[k * 1024 : k * 1024 + 2048])
        assert t_ns == round(k * 1024 * 1e9 / 12000)
    np.testing.assert_array_equal(w.recent(), x[-24000:])


def test_hop_larger_than_window() -> None:
    x = np.arange(100, dtype=np.float32)
    w = SensorWindower(window=10, hop=25, model_fs=100.0)
    wins = [v for f in _frames(x, 100.0, [3, 11]) for v in w.push(f)]
    assert [int(v[0]) for v in wins] == [0, 25, 50, 75]


def test_resampled_windows_match_one_shot(rng: np.random.Generator) -> None:
    x = rng.normal(size=48_000 * 2)
    ref = resample_poly(x, 1, 4)
    w = SensorWindower(window=2048, hop=1024, model_fs=12000.0, history_s=1.0)
    wins = [v for f in _frames(x, 48000.0, [4800, 1000]) for v in w.push(f)]
    assert len(wins) >= 20
    for k, v in enumerate(wins):
        np.testing.assert_allclose(v, ref[k * 1024 : k * 1024 + 2048], atol=1e-5)
    assert len(w.recent()) == 12000


def test_gap_and_reorder_reset_and_count(rng: np.random.Generator) -> None:
    x = rng.normal(size=8000).astype(np.float32)
    fr = _frames(x, 1000.0, [1000])
    w = SensorWindower(window=1500, hop=1500, model_fs=1000.0)
    assert len(w.push(fr[0])) == 0
    assert len(w.push(fr[2])) == 0  # gap: the 1000 buffered samples are dropped
    assert w.stats.gaps == 1 and len(w.recent()) == 1000
    wins = w.push(fr[3])
    assert len(wins) == 1
    np.testing.assert_array_equal(wins[0], x[2000:3500])  # no window spans the gap
    w.push(fr[3])  # duplicate
    assert w.stats.reorders == 1 and len(w.recent()) == 1000
    w.push(Frame(0, 0, 1000.0, x[:1000]))  # sensor restarted its counter
    assert w.stats.reorders == 2 and w.stats.resets == 3
    assert len(w.push(Frame(1, 0, 1000.0, x[1000:2000]))) == 1
    w.push(Frame(2, 0, 2000.0, x[:10]))
    assert w.stats.rate_changes == 1
