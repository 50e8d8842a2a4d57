"""An int16 history ring gives the same float32 windows and history, to the last bit, as the
float32 samples the frames decode to (edge/windowing.py keeps int16 frames as counts + scale)."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.windowing import MAX_SCALE_RUNS, SensorWindower

from edgevib.protocol.frames import Frame, decode, encode


def _wire(k: int, x: np.ndarray, dtype: str, fs: float = 12000.0, scale: float | None = None) -> Frame:
    """``x`` through the wire (int16 scale: the frame's own peak, unless given), as the agent gets it."""
    return decode(encode(Frame(k, 1_000 + k, fs, x), dtype, scale), max_samples=65536)  # type: ignore[arg-type]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()


def _feed_both(frames: list[Frame], window: int, hop: int, history_s: float) -> tuple[SensorWindower, int]:
    """Feed ``frames`` to a windower (int16 ring where it can) and to one given only their float32
    samples (float32 ring, as before); every window, time and history must be identical."""
    w16 = SensorWindower(window, hop, 12000.0, history_s=history_s)
    w32 = SensorWindower(window, hop, 12000.0, history_s=history_s)
    n = 0
    for f in frames:
        got = w16.push_timed(f)
        want = w32.push_timed(Frame(f.seq, f.t0_ns, f.fs, f.samples))  # no counts: the float32 ring
        assert [t for t, _ in got] == [t for t, _ in want]
        assert all(_same(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
        assert _same(w16.recent(), w32.recent())
        n += len(got)
    assert w16.stats == w32.stats
    return w16, n


@pytest.mark.parametrize(("window", "hop", "history_s"), [(8192, 1024, 2.0), (2048, 512, 0.0), (1000, 1500, 0.5)])
def test_int16_ring_is_bit_identical(window: int, hop: int, history_s: float, rng: np.random.Generator) -> None:
    frames, k = [], 0
    for _ in range(60):
        n = int(rng.choice([1, 333, 4096, 5000, 30_000]))  # 30,000 > the ring: taken in chunks
        amp = float(rng.choice([1e-3, 0.5, 40.0]))  # a new scale (the frame's peak) nearly every frame
        frames.append(_wire(k, (rng.normal(size=n) * amp).astype(np.float32), "int16"))
        k += 1 if rng.random() > 0.05 else 3  # sometimes a gap: the stream (and its runs of scales) resets
    w, n = _feed_both(frames, window, hop, history_s)
    assert n > 100
    assert w.history_bytes == 2 * len(w._hist)  # still int16 after all that


def test_int16_ring_takes_half_the_bytes(rng: np.random.Generator) -> None:
    x = (rng.normal(size=48_000) * 0.2).astype(np.float32)
    w, _ = _feed_both([_wire(k, x[k * 4096 : (k + 1) * 4096], "int16") for k in range(11)], 8192, 1024, 2.0)
    assert w.history_bytes == 24_000 * 2  # 2 s at 12 kHz as int16 (float32: 96,000 bytes)


def test_fixed_scale_small_frames_stay_int16(rng: np.random.Generator) -> None:
    """One scale for every frame (an ADC's fixed g per count): one run, whatever the frame size."""
    x = (rng.normal(size=30_000) * 0.2).astype(np.float32)
    frames = [_wire(k, x[k * 50 : (k + 1) * 50], "int16", scale=2**-12) for k in range(600)]
    w, n = _feed_both(frames, 2048, 1024, 1.0)
    assert n > 20 and w.history_bytes == 2 * len(w._hist) and len(w._run_scale) == 1


@pytest.mark.parametrize("why", ["float32 frame", "JSON frame", "many scales", "resampled"])
def test_falls_back_to_float32_exactly(why: str, rng: np.random.Generator) -> None:
    x = (rng.normal(size=60_000) * 0.3).astype(np.float32)
    frames = [_wire(k, x[k * 1000 : (k + 1) * 1000], "int16") for k in range(20)]
    if why == "float32 frame":
        frames.append(_wire(20, x[20_000:24_000], "float32"))
    elif why == "JSON frame":
        frames.append(decode(b'{"v":1,"seq":20,"t0":0,"fs":12000,"samples":[0.25,-0.5,0.125]}'))
    elif why == "many scales":  # a new scale every 100 samples: more runs than the ring keeps
        frames += [_wire(20 + k, x[20_000 + k * 100 : 20_100 + k * 100], "int16") for k in range(MAX_SCALE_RUNS + 5)]
    frames += [_wire(len(frames) + k, x[40_000 + k * 4096 : 44_096 + k * 4096], "int16") for k in range(4)]
    if why == "resampled":  # 24 kHz int16 is resampled to 12 kHz: float32 from the first frame on
        frames = [_wire(k, x[k * 4096 : (k + 1) * 4096], "int16", fs=24000.0) for k in range(10)]
    w, n = _feed_both(frames, 2048, 1024, 1.0)
    assert n > 5
    assert w.history_bytes == 4 * len(w._hist)  # float32 now


def test_decoded_int16_frame_keeps_its_counts() -> None:
    x = np.array([0.5, -0.25, 0.1, 0.0], np.float32)
    f = _wire(0, x, "int16")
    assert f.counts is not None and f.counts.dtype.itemsize == 2
    assert _same((f.counts.astype(np.float32) * np.float32(f.scale)).astype(np.float32), f.samples)
    assert _wire(0, x, "float32").counts is None


def test_falls_back_in_the_middle_of_a_long_frame(rng: np.random.Generator) -> None:
    """Too many scale runs reached by the first chunk of a frame longer than the ring's room:
    the rest of that frame goes into the float32 ring as samples, not counts."""
    x = (rng.normal(size=80_000) * 0.3).astype(np.float32)
    frames = [_wire(k, x[k * 100 : (k + 1) * 100], "int16") for k in range(MAX_SCALE_RUNS)]
    frames.append(_wire(MAX_SCALE_RUNS, x[10_000:50_000], "int16"))  # 40,000 samples: taken in chunks
    w, n = _feed_both(frames, 8192, 1024, 2.0)
    assert n > 20 and w.history_bytes == 4 * len(w._hist)
