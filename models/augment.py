"""Batch augmentations that imitate a different acquisition chain (torch, CPU or GPU).

A model trained on one rig session learns that session's sensor, filters and speed.
These perturbations make it read the fault instead: random crops out of contiguous
recording segments (time shift), shaft-speed scaling by resampling (fault frequencies
scale with speed), a random smooth spectral gain (sensor resonance, anti-alias and
band-limit differences, tilt), white noise at a random SNR, gain and polarity.

>>> import torch
>>> segs = [np.sin(np.arange(9000, dtype=np.float32) / 7)]
>>> aug = Augmenter(segs, np.array([0]), window=2048, config=AugmentConfig(), seed=0)
>>> x, y = aug.batch(4)
>>> tuple(x.shape), y.tolist()
((4, 1, 2048), [0, 0, 0, 0])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgevib.models.errors import ModelsError

from edgevib.extras import require

torch: Any = require("torch", extra="train", feature="CNN training")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each perturbation; ``none()`` switches all off."""

    speed: float = 0.05  # max relative shaft-speed change (+-)
    p_speed: float = 0.8
    p_eq: float = 0.9  # random smooth spectral gain (tilt, resonance, low-pass)
    eq_tilt_db: float = 6.0  # gain change from 0 Hz to Nyquist, +-
    eq_peak_db: float = 18.0  # sensor-resonance bump height, +-
    lowpass_hz: tuple[float, float] = (3000.0, 6000.0)  # random anti-alias corner
    p_lowpass: float = 0.5  # of the EQ'd windows
    p_noise: float = 0.7
    snr_db: tuple[float, float] = (-8.0, 15.0)
    p_flip: float = 0.5
    gain: tuple[float, float] = (0.5, 2.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        """Clean training: crops only (random time shift), nothing else."""
        return cls(speed=0.0, p_speed=0.0, p_eq=0.0, p_noise=0.0, p_flip=0.0, gain=(1.0, 1.0))

    def replace(self, **kw: Any) -> AugmentConfig:
        return dataclasses.replace(self, **kw)


def segments_from_windows(x: np.ndarray, rec: np.ndarray, start: np.ndarray,
                          y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Stitch windows back into contiguous signal segments (one per unbroken run).

    Windows of one recording that overlap or touch are joined, so crops can start
    anywhere; a gap (e.g. the time-split cut) starts a new segment, so no crop spans it.
    """
    w = x.shape[1]
    segs: list[np.ndarray] = []
    labels: list[int] = []
    order = np.lexsort((start, rec))
    i = 0
    while i < len(order):
        j = i
        end = int(start[order[i]]) + w
        while j + 1 < len(order) and rec[order[j + 1]] == rec[order[i]] and start[order[j + 1]] <= end:
            j += 1
            end = int(start[order[j]]) + w
        s0 = int(start[order[i]])
        buf = np.empty(end - s0, dtype=np.float32)
        for k in order[i:j + 1]:
            buf[int(start[k]) - s0:int(start[k]) - s0 + w] = x[k]
        segs.append(buf)
        labels.append(int(y[order[i]]))
        i = j + 1
    return segs, np.asarray(labels, dtype=np.int64)


class Augmenter:
    """Draws augmented, class-balanced batches ``[B, 1, window]`` from signal segments."""

    def __init__(self, segments: list[np.ndarray], labels: np.ndarray, *, window: int,
                 config: AugmentConfig, seed: int = 0, fs: float = 12000.0,
                 device: str = "cpu") -> None:
        self.need = int(math.ceil(window * (1 + config.speed))) + 2
        short = [len(s) for s in segments if len(s) < window]
        if short:
            raise ModelsError("models.augment", f"segment of {min(short)} samples, shorter than the "
                              f"{window}-sample window", "cut windows of the model's length from the recordings")
        # A lone window (hop > window) lacks the margin a faster-speed crop reads past its end:
        # mirror a few samples rather than refuse it.
        segments = [np.pad(s, (0, max(0, self.need - len(s))), mode="reflect") for s in segments]
        self.cfg, self.window, self.fs, self.device = config, window, fs, device
        self.segments = segments
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        # Sample segments in proportion to length within a class, classes equally.
        classes = np.unique(self.labels)
        lens = np.array([len(s) - self.need for s in segments], dtype=np.float64) + 1
        self.p = np.zeros(len(segments))
        for c in classes:
            m = self.labels == c
            self.p[m] = lens[m] / lens[m].sum() / len(classes)

    def _crops(self, idx: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Linear-interpolated crops: ``scale`` > 1 reads faster (higher shaft speed)."""
        buf = np.empty((len(idx), self.need), dtype=np.float32)
        for b, i in enumerate(idx):
            off = int(self.rng.integers(0, len(self.segments[i]) - self.need + 1))
            buf[b] = self.segments[i][off:off + self.need]
        pos = self.rng.random((len(idx), 1)) + np.arange(self.window)[None, :] * scale[:, None]
        i0 = pos.astype(np.int64)
        frac = (pos - i0).astype(np.float32)
        a = np.take_along_axis(buf, i0, axis=1)
        return a + (np.take_along_axis(buf, i0 + 1, axis=1) - a) * frac

    def batch(self, size: int) -> tuple[Any, Any]:
        """One augmented batch: ``x`` float32 ``[size, 1, W]`` and ``y`` int64 ``[size]``."""
        cfg, rng = self.cfg, self.rng
        idx = rng.choice(len(self.segments), size=size, p=self.p)
        scale = np.where(rng.random(size) < cfg.p_speed, rng.uniform(1 - cfg.speed, 1 + cfg.speed, size), 1.0)
        x = torch.from_numpy(self._crops(idx, scale)).to(self.device)
        y = torch.from_numpy(self.labels[idx]).to(self.device)
        if cfg.p_eq > 0:
            x = apply_eq(x, random_eq_db(self.window // 2 + 1, size, cfg, rng, self.fs))
        if cfg.p_noise > 0:
            x = add_noise(x, rng.uniform(*cfg.snr_db, size), rng.random(size) < cfg.p_noise, self.gen)
        sign = np.where(rng.random(size) < cfg.p_flip, -1.0, 1.0) * rng.uniform(*cfg.gain, size)
        x = x * torch.from_numpy(sign.astype(np.float32)).to(self.device)[:, None]
        return x[:, None, :], y

def random_eq_db(n_bins: int, size: int, cfg: AugmentConfig, rng: np.random.Generator,
                 fs: float = 12000.0) -> np.ndarray:
    """Random smooth gain curves in dB ``[size, n_bins]``: tilt + resonance + low-pass."""
    f = np.linspace(0, fs / 2, n_bins)[None, :]
    on = (rng.random(size) < cfg.p_eq)[:, None]
    tilt = rng.uniform(-cfg.eq_tilt_db, cfg.eq_tilt_db, (size, 1)) * f / (fs / 2)
    f0 = rng.uniform(500, 0.48 * fs, (size, 1))
    bw = rng.uniform(100, 1500, (size, 1))
    peak = rng.uniform(-cfg.eq_peak_db, cfg.eq_peak_db, (size, 1)) * np.exp(-0.5 * ((f - f0) / bw) ** 2)
    fc = rng.uniform(*cfg.lowpass_hz, (size, 1))
    order = rng.uniform(2, 8, (size, 1))
    lowpass = -10 * np.log10(1 + (f / fc) ** (2 * order))  # Butterworth-like magnitude
    lp_on = rng.random((size, 1)) < cfg.p_lowpass
    db = tilt + peak + np.where(lp_on, lowpass, 0.0)
    return np.where(on, db, 0.0)


def apply_eq(x: Any, db: np.ndarray) -> Any:
    """Multiply each row's spectrum by ``10**(db/20)`` (zero-phase)."""
    spec = torch.fft.rfft(x, dim=-1)
    g = torch.from_numpy((10 ** (db / 20)).astype(np.float32)).to(x.device)
    return torch.fft.irfft(spec * g, n=x.shape[-1], dim=-1)


def add_noise(x: Any, snr_db: np.ndarray, on: np.ndarray, gen: Any) -> Any:
    """Add white Gaussian noise at ``snr_db`` (per row) where ``on`` is true."""
    p = x.pow(2).mean(dim=-1, keepdim=True)
    snr = torch.from_numpy(snr_db.astype(np.float32)).to(x.device)[:, None]
    sigma = torch.sqrt(p / 10 ** (snr / 10)) * torch.from_numpy(on.astype(np.float32)).to(x.device)[:, None]
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x + sigma * noise
