"""Per-sensor windowing: sequence checks, streaming resampling, sliding windows, history.

:class:`StreamResampler` is a stateful polyphase filter (numpy only) with the same
filter as ``scipy.signal.resample_poly``, so feeding a signal in chunks gives the same
samples as resampling it at once (all but the not-yet-emitted tail).

>>> import numpy as np
>>> from edgevib.protocol.frames import Frame
>>> w = SensorWindower(window=4, hop=2, model_fs=100.0)
>>> [x.tolist() for x in w.push(Frame(0, 0, 100.0, np.arange(6, dtype=np.float32)))]
[[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from edgevib.edge.errors import WindowingError

from edgevib.protocol.frames import Frame, counts_to_samples

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]


# A rate error far below any bearing's slip (~1 %) or the fault-frequency search tolerance
# (2 %): lets e.g. MFPT's 48,828 Hz (29/118 of 12 kHz, 8 ppm off) stream without a publisher
# resampling it first.
RATE_TOLERANCE = 1e-4
MAX_RATIO_TERM = 1000  # fallback when no p/q <= 160 fits: the filter grows with q (20 q taps)
RING_SLACK = 4096  # the history ring holds at least a window plus this many samples (one frame in one piece)
# An int16 history ring keeps one (start, scale) pair per run of frames with one scale; a stream whose
# scale changes every few hundred samples would need more than this many, and is kept as float32.
MAX_SCALE_RUNS = 64


def rate_ratio(fs_in: float, fs_out: float, max_den: int = 160) -> tuple[int, int]:
    """``(up, down)`` with ``fs_out / fs_in == up / down`` (to :data:`RATE_TOLERANCE`), or WindowingError."""
    if not (fs_in > 0 and fs_out > 0):
        raise WindowingError("edge.windowing", f"rates {fs_in} -> {fs_out} Hz", "use positive sample rates")
    want = fs_out / fs_in
    r = Fraction(want).limit_denominator(max_den)
    if abs(float(r) - want) > RATE_TOLERANCE * want:  # e.g. 97,656 Hz: a longer filter, still exact enough
        r = Fraction(want).limit_denominator(MAX_RATIO_TERM)
        max_den = MAX_RATIO_TERM
    if r.numerator == 0 or abs(float(r) - want) > RATE_TOLERANCE * want or r.numerator > max_den:
        raise WindowingError("edge.windowing", f"sensor rate {fs_in} Hz has no small ratio to {fs_out} Hz",
                             "use a sensor rate whose ratio to the model rate is within 1e-4 of a fraction p/q with "
                             f"p, q <= {MAX_RATIO_TERM}, or resample before publishing")
    return r.numerator, r.denominator


def lowpass_taps(half: int, cutoff: float, beta: float = 5.0) -> npt.NDArray[np.float64]:
    """``scipy.signal.firwin(2 * half + 1, cutoff, window=("kaiser", beta))`` in numpy:
    a windowed-sinc low-pass (``cutoff`` relative to Nyquist) scaled to unit gain at DC."""
    m = np.arange(2 * half + 1, dtype=np.float64) - half
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half + 1, beta)
    return h / h.sum()


class StreamResampler:
    """Chunk-wise ``resample_poly(x, up, down)`` with state carried across chunks.

    Output ``m`` is ``sum_i x[i] * h[m*down + half - i*up]`` (the zero-stuffed input through
    the centred filter ``h``, every ``down``-th sample), evaluated directly as a polyphase
    dot product in numpy: ``scipy.signal`` is not needed on the gateway.
    """

    def __init__(self, up: int, down: int) -> None:
        self.up, self.down = up, down
        self.half = 10 * max(up, down)
        self.h = lowpass_taps(self.half, 1.0 / max(up, down)) * up if up != down else np.ones(1)
        # Polyphase bank: phase p holds h[p], h[p + up], h[p + 2 up], ... (zero-padded).
        self._taps = -(-len(self.h) // up)
        hp = np.zeros(self._taps * up)
        hp[: len(self.h)] = self.h
        self._rbank = hp.reshape(self._taps, up).T[:, ::-1].copy()  # [up, taps], each phase reversed
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float64)
        self._start = 0  # absolute input index of _buf[0]
        self._n_in = 0
        self._m = 0  # next output index

    def push(self, x: npt.ArrayLike) -> F32:
        x = np.asarray(x, np.float64)
        if self.up == self.down:
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        up, down, d, k = self.up, self.down, self.half, self._taps
        # Output m needs inputs up to floor((m*down + d) / up); later inputs cannot change it.
        m_end = max(self._m, (self._n_in * up - d + down - 1) // down)
        if m_end == self._m:
            return np.zeros(0, np.float32)
        n = np.arange(self._m, m_end, dtype=np.int64) * down + d - self._start * up  # filter index of _buf[0]
        last = n // up  # newest input each output uses (< len(_buf) by the choice of m_end)
        # Inputs before the stream began are zeros: pad k of them in front of the buffer. Row s of
        # the sliding view is padded[s : s + k]; output m dots row last + 1 with its phase's
        # reversed taps. Outputs m, m + up, ... share a phase and step down rows: one strided
        # matrix-vector product per phase, no per-sample Python and no gather.
        rows = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(k), self._buf]), k)
        out = np.empty(len(n), np.float32)
        for r in range(min(up, len(n))):
            s0, cnt = int(last[r]) + 1, len(range(r, len(n), up))
            # einsum reads the strided rows in place (2x faster than matmul, which copies them)
            out[r::up] = np.einsum("ij,j->i", rows[s0 : s0 + down * (cnt - 1) + 1 : down], self._rbank[int(n[r]) % up])
        self._m = m_end
        # Keep only inputs the next output still needs (they are real samples, so extra ones are harmless).
        keep_from = max(self._start, (self._m * down + d - 2 * d) // up)
        self._buf = self._buf[keep_from - self._start :]
        self._start = keep_from
        return out


@dataclass
class WindowStats:
    frames: int = 0
    samples: int = 0
    windows: int = 0
    gaps: int = 0
    reorders: int = 0
    rate_changes: int = 0
    resets: int = 0


class SensorWindower:
    """Frames of one sensor in, float32 windows of ``window`` samples at ``model_fs`` out.

    A sequence gap (seq jumps ahead) or a reorder/duplicate/restart (seq goes back)
    resets the stream: buffered samples are dropped and the frame starts a new one,
    so no window ever spans a discontinuity. ``recent()`` holds the last
    ``history_s`` seconds at the model rate (for the evidence check).

    Windows are copied out of the same history ring (no separate window buffer: with 8192-
    sample windows that buffer was ~45 kB per sensor on top of the 96 kB ring); the ring is at
    least ``window + RING_SLACK`` samples, and a frame longer than the ring's room beyond one
    window is taken in chunks, so no sample of an uncut window is overwritten.

    While every frame arrives as int16 at the model rate (``Frame.counts``), the ring stores
    the int16 counts (2 bytes a sample instead of 4: 48 kB for 2 s at 12 kHz) and the scale of
    each run of frames; windows and ``recent()`` convert only what they copy out, with the
    decoder's own two steps (``edgevib.protocol.frames.counts_to_samples``: counts to float32,
    times the float32 scale), so they are bit-identical to the float32 samples the frames
    decoded to. The first frame without an exact int16 form (float32, JSON, resampled) or a
    scale that changes more than ``MAX_SCALE_RUNS`` times within the ring turns the ring into
    float32 for good.

    ``set_history(seconds)`` changes how much history the ring keeps while the stream runs
    (the agent keeps 2 s only ahead of a speed estimate or an indicator snapshot): a shorter
    history keeps the newest samples (never fewer than a window + ``RING_SLACK``, so every
    uncut window stays whole), a longer one grows the ring as signal arrives. Windows and
    ``recent()`` are the same samples either way.
    """

    def __init__(self, window: int = 2048, hop: int = 1024, model_fs: float = 12000.0,
                 history_s: float = 2.0) -> None:
        if window < 1 or not 1 <= hop:
            raise WindowingError("edge.windowing", f"window={window}, hop={hop}", "use window >= 1 and hop >= 1")
        if not model_fs > 0 or history_s < 0:
            raise WindowingError("edge.windowing", f"model_fs={model_fs}, history_s={history_s}",
                                 "use model_fs > 0 and history_s >= 0")
        self.window, self.hop, self.model_fs = window, hop, float(model_fs)
        self.history_len = self._capacity = 0
        self._set_len(history_s)
        self.stats = WindowStats()
        self._fs: float | None = None
        self._resampler: StreamResampler | None = None
        self._expect: int | None = None
        # ring buffer, grown to history_len as signal arrives: a sensor that sent one frame
        # (or a flood of invented names, up to max_sensors) does not cost 2 s of samples each
        self._hist: npt.NDArray[np.int16] | F32 = np.zeros(0, np.int16)
        self._counts = True  # the ring holds int16 counts (else float32 samples)
        # int16 ring: stream index (as _total counts) where each run of one scale starts, and its scale
        self._run_start: list[int] = []
        self._run_scale: list[np.float32] = []
        self._reset_stream()

    def _set_len(self, history_s: float) -> None:
        self.history_len = max(self.window, int(round(history_s * self.model_fs)))
        self._capacity = max(self.history_len, self.window + RING_SLACK)  # ring size once grown

    def set_history(self, history_s: float) -> None:
        """Keep ``history_s`` seconds from now on: shorter at once (the newest samples stay),
        longer as signal arrives (``recent()`` reaches it after that much more signal)."""
        if history_s < 0:
            raise WindowingError("edge.windowing", f"history_s={history_s}", "use history_s >= 0")
        self._set_len(history_s)
        if len(self._hist) > self._capacity:
            self._resize(self._capacity)

    def _held(self) -> npt.NDArray[np.int16] | F32:
        """The samples the ring holds, oldest first, as stored (a copy only when wrapped)."""
        ring, n = self._hist, self._hist_n
        i = (self._hist_pos - n) % len(ring) if len(ring) else 0
        return ring[i : i + n] if i + n <= len(ring) else np.concatenate([ring[i:], ring[: i + n - len(ring)]])

    def _resize(self, k: int) -> None:
        """A ring of ``k`` samples holding the newest ``min(k, held)`` samples, in order from index 0."""
        keep = self._held()[-k:] if k else self._held()[:0]
        ring: npt.NDArray[np.int16] | F32 = np.zeros(k, np.int16) if self._counts else np.zeros(k, np.float32)
        ring[: len(keep)] = keep
        self._hist, self._hist_n = ring, len(keep)
        self._hist_pos = len(keep) % k if k else 0
        self._prune_runs()

    def _prune_runs(self) -> None:
        """Forget the int16 scale runs that ended before the oldest sample the ring holds."""
        if self._counts:
            oldest = self._total - self._hist_n
            while len(self._run_start) > 1 and self._run_start[1] <= oldest:
                del self._run_start[0], self._run_scale[0]

    def _reset_stream(self) -> None:
        self._total = 0  # output samples since stream start
        self._next_start = 0  # output-sample index (since stream start) of the next window's first sample
        self._stream_t0_ns = 0
        self._hist_n = 0  # valid samples in the history ring (it fills from index 0 until it wraps)
        self._hist_pos = 0  # where the next sample goes
        self._run_start, self._run_scale = [], []
        if self._resampler is not None:
            self._resampler.reset()

    def _start(self, frame: Frame) -> None:
        if self._fs != frame.fs:
            up, down = rate_ratio(frame.fs, self.model_fs)
            self._resampler = StreamResampler(up, down)
            self._fs = frame.fs
        self._reset_stream()
        self._stream_t0_ns = frame.t0_ns

    def push(self, frame: Frame) -> list[F32]:
        """New windows completed by ``frame`` (possibly none)."""
        return [w for _, w in self.push_timed(frame)]

    def push_timed(self, frame: Frame) -> list[tuple[int, F32]]:
        """Like :meth:`push`, each window with the time of its first sample (ns)."""
        st = self.stats
        if self._expect is None:
            self._start(frame)
        elif frame.fs != self._fs:
            st.rate_changes += 1
            st.resets += 1
            log.info("sensor rate changed %s -> %s Hz: window reset", self._fs, frame.fs)
            self._start(frame)
        elif frame.seq > self._expect:
            st.gaps += 1
            st.resets += 1
            log.info("sequence gap: expected %d, got %d: window reset", self._expect, frame.seq)
            self._start(frame)
        elif frame.seq < self._expect:
            st.reorders += 1
            st.resets += 1
            log.info("sequence went back: expected %d, got %d: window reset", self._expect, frame.seq)
            self._start(frame)
        self._expect = (frame.seq + 1) % 2**64
        st.frames += 1
        st.samples += len(frame.samples)
        assert self._resampler is not None
        if self._counts and (frame.counts is None or self._resampler.up != self._resampler.down):
            self._to_float32()
        # int16 at the model rate: the counts are the samples (the resampler would only copy them)
        y: npt.NDArray[np.int16] | F32 = frame.counts if self._counts and frame.counts is not None \
            else self._resampler.push(frame.samples)
        out: list[tuple[int, F32]] = []
        room = self._capacity - self.window  # samples the ring takes before an uncut window's start is overwritten
        for c0 in range(0, len(y), room):
            self._remember(y[c0 : c0 + room], frame.scale)
            while self._next_start + self.window <= self._total:
                t_ns = self._stream_t0_ns + round(self._next_start * 1e9 / self.model_fs)
                out.append((t_ns, self._cut(self._total - self._next_start)))
                self._next_start += self.hop  # hop > window skips the samples between windows
        st.windows += len(out)
        return out

    def _cut(self, back: int) -> F32:
        """A copy of the ``window`` samples that start ``back`` samples before the newest one's end."""
        return self._read(back, self.window)

    def recent(self) -> F32:
        """The last ``history_s`` seconds of continuous signal at the model rate."""
        n = min(self._hist_n, self.history_len)
        return self._read(n, n)

    @property
    def history_bytes(self) -> int:
        """Bytes the history ring holds now (int16 or float32 samples)."""
        return int(self._hist.nbytes)

    def _read(self, back: int, n: int) -> F32:
        """float32 copy of the ``n`` samples that start ``back`` (<= the samples held) before the newest one's end."""
        ring, size = self._hist, len(self._hist)
        if n == 0:
            return np.zeros(0, np.float32)
        # the ring fills from index 0 until it wraps (_hist_pos == _hist_n until then): one formula for both
        i = (self._hist_pos - back) % size
        if not self._counts:
            if i + n <= size:
                return ring[i : i + n].copy()  # type: ignore[return-value]
            return np.concatenate([ring[i:], ring[: i + n - size]])
        # the counts as float32 (exact), then each run's part times its scale: the decoder's two steps
        out = ring[i : i + n].astype(np.float32) if i + n <= size else np.concatenate([ring[i:], ring[: i + n - size]],
                                                                                       dtype=np.float32)
        a = self._total - back  # stream index of the first sample wanted
        starts, scales = self._run_start, self._run_scale
        j = bisect_right(starts, a) - 1  # the run holding sample a (runs start at or before the oldest sample)
        while j < len(starts) and (p := starts[j]) < a + n:
            q = starts[j + 1] if j + 1 < len(starts) else self._total  # run j is [p, q); its part of [a, a + n):
            view = out[max(p, a) - a : min(q, a + n) - a]
            np.multiply(view, scales[j], out=view)
            j += 1
        return out

    def _to_float32(self) -> None:
        """From now on the ring holds float32 samples: what it holds is converted (exactly), in order."""
        held = self._read(self._hist_n, self._hist_n)
        ring = np.zeros(len(self._hist), np.float32)
        ring[: len(held)] = held
        self._hist, self._counts = ring, False
        self._hist_pos = self._hist_n % len(ring) if len(ring) else 0
        self._run_start, self._run_scale = [], []

    def _remember(self, y: npt.NDArray[np.int16] | F32, scale: float) -> None:
        """Append to the history ring: only the new samples are copied, not the whole history
        (a 2 s history at 12 kHz is 96 kB that concatenating would copy on every frame).
        ``scale`` (g per count) applies to int16 counts only."""
        n = len(y)
        if not self._counts and y.dtype != np.float32:  # the ring turned float32 within this frame's chunks
            y = counts_to_samples(y, scale)
        if self._counts and (not self._run_scale or self._run_scale[-1] != scale):
            self._run_start.append(self._total)
            self._run_scale.append(np.float32(scale))  # exact: the wire's scale is a float32
        if len(self._hist) < self._capacity and self._hist_n + n > len(self._hist):
            self._resize(min(self._capacity, max(2 * len(self._hist), self._hist_n + n)))
        ring = self._hist
        size = len(ring)
        self._total += n
        if n >= size:
            ring[:] = y[n - size :]
            self._hist_pos, self._hist_n = 0, size
        else:
            first = min(n, size - self._hist_pos)
            ring[self._hist_pos : self._hist_pos + first] = y[:first]
            ring[: n - first] = y[first:]
            self._hist_pos = (self._hist_pos + n) % size
            self._hist_n = min(size, self._hist_n + n)
        self._prune_runs()  # runs that ended before the oldest sample are overwritten
        if self._counts and len(self._run_start) > MAX_SCALE_RUNS:  # a scale per small frame: float32 is less work
            self._to_float32()
