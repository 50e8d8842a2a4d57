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
