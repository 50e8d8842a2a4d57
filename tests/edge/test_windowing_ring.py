"""Windows cut from the history ring equal slices of the stream, whatever the frame sizes."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.windowing import SensorWindower

from edgevib.protocol.frames import Frame


@pytest.mark.parametrize(("window", "hop", "history_s"), [(8192, 1024, 2.0), (2048, 1024, 0.0), (1000, 1500, 0.5),
                                                          (256, 1, 0.1)])
def test_windows_and_history_from_one_ring(window: int, hop: int, history_s: float, rng: np.random.Generator) -> None:
    x = rng.normal(size=80_000).astype(np.float32)
    w = SensorWindower(window, hop, 12000.0, history_s=history_s)
    got: list[tuple[int, np.ndarray]] = []
    i = k = 0
    while i < len(x):
        n = int(rng.choice([1, 333, 4096, 5000, 30_000]))  # 30,000 > the ring: taken in chunks
        got += w.push_timed(Frame(k, 7_000, 12000.0, x[i : i + n]))
        i, k = min(i + n, len(x)), k + 1
        np.testing.assert_array_equal(w.recent(), x[max(0, i - w.history_len) : i])
    starts = range(0, len(x) - window + 1, hop)
    assert len(got) == len(starts)
    for s, (t_ns, win) in zip(starts, got, strict=True):
        assert t_ns == 7_000 + round(s * 1e9 / 12000.0)
        np.testing.assert_array_equal(win, x[s : s + window])


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_switching_the_history_length_keeps_windows_and_recent_history(dtype: str, rng: np.random.Generator) -> None:
    """set_history() between frames (the agent keeps 2 s only ahead of its 2 s reads): every window
    and its time equal the stream's slices, and recent() is always the newest history_len samples
    the ring has seen since it last held fewer (int16: to the last bit of the decoded samples)."""
    from edgevib.protocol.frames import decode, encode

    window, hop, fs = 8192, 1024, 12000.0
    frames, k = [], 0
    for _ in range(120):
        n = int(rng.choice([1, 333, 4096, 5000, 30_000]))
        x = (rng.normal(size=n) * float(rng.choice([1e-3, 0.5, 40.0]))).astype(np.float32)
        frames.append(decode(encode(Frame(k, 5_000, fs, x), dtype), max_samples=65536))  # type: ignore[arg-type]
        k += 1
    stream = np.concatenate([f.samples for f in frames])
    w = SensorWindower(window, hop, fs, history_s=2.0)
    got: list[tuple[int, np.ndarray]] = []
    i = ring_n = 0  # samples sent; samples the ring should hold (a shorter history drops the oldest)
    lengths = []
    for f in frames:
        if rng.random() < 0.3:
            w.set_history(float(rng.choice([1.0, 2.0])))
            lengths.append(w.history_len)
        cap = max(w.history_len, window + 4096)
        got += w.push_timed(f)
        i += len(f.samples)
        ring_n = min(min(ring_n, cap) + len(f.samples), cap)
        held = min(ring_n, w.history_len)
        assert w.recent().tobytes() == stream[i - held : i].tobytes()
        assert len(w._hist) <= cap
    assert {12_000, 24_000} <= set(lengths)
    starts = range(0, len(stream) - window + 1, hop)
    assert len(got) == len(starts)
    for s, (t_ns, win) in zip(starts, got, strict=True):
        assert t_ns == 5_000 + round(s * 1e9 / fs)
        assert win.tobytes() == stream[s : s + window].tobytes()
