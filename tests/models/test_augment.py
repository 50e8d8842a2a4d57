"""Augmentations: stitching windows back into segments, crops, speed, EQ, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgevib.models.augment import (
    AugmentConfig,
    Augmenter,
    add_noise,
    apply_eq,
    random_eq_db,
    segments_from_windows,
)
from edgevib.models.errors import ModelsError


def _cut(sig: np.ndarray, starts: list[int], w: int) -> np.ndarray:
    return np.stack([sig[s:s + w] for s in starts]).astype(np.float32)


def test_segments_rebuild_signal_and_split_at_gaps() -> None:
    a = np.arange(100, dtype=np.float32)
    b = -np.arange(100, dtype=np.float32)
    w = 20
    starts_a = [0, 10, 20, 30, 70, 80]  # gap between 30+20=50 and 70: two segments
    starts_b = [5, 25]  # touching (25 == 5 + 20): one segment
    x = np.concatenate([_cut(a, starts_a, w), _cut(b, starts_b, w)])
    rec = np.array([0] * 6 + [1] * 2)
    start = np.array(starts_a + starts_b)
    y = np.array([3] * 6 + [7] * 2)
    perm = np.random.default_rng(0).permutation(len(x))  # order must not matter
    segs, labels = segments_from_windows(x[perm], rec[perm], start[perm], y[perm])
    assert [len(s) for s in segs] == [50, 30, 40]
    np.testing.assert_array_equal(segs[0], a[0:50])
    np.testing.assert_array_equal(segs[1], a[70:100])
    np.testing.assert_array_equal(segs[2], b[5:45])
    assert labels.tolist() == [3, 3, 7]


def test_crops_follow_speed_scaling_and_balance_classes() -> None:
    ramp = np.arange(5000, dtype=np.float32)
    cfg = AugmentConfig.none().replace(speed=0.08, p_speed=1.0)
    aug = Augmenter([ramp, ramp.copy(), ramp.copy()], np.array([0, 0, 1]), window=256, config=cfg, seed=3)
    x, y = aug.batch(400)
    assert tuple(x.shape) == (400, 1, 256) and x.dtype == torch.float32
    slope = np.diff(x[:, 0, :].numpy(), axis=1).mean(axis=1)
    assert np.all(slope > 0.92 - 1e-3) and np.all(slope < 1.08 + 1e-3)
    assert slope.std() > 0.02  # speeds really vary
    frac1 = float((y == 1).float().mean())
    assert 0.4 < frac1 < 0.6  # one segment of class 1 vs two of class 0: classes balanced


def test_clean_config_gives_unscaled_crops_and_is_seeded() -> None:
    ramp = np.arange(3000, dtype=np.float32)
    a = Augmenter([ramp], np.array([0]), window=128, config=AugmentConfig.none(), seed=5)
    x1, _ = a.batch(8)
    np.testing.assert_allclose(np.diff(x1[:, 0].numpy(), axis=1), 1.0, atol=1e-3)
    b = Augmenter([ramp], np.array([0]), window=128, config=AugmentConfig.none(), seed=5)
    np.testing.assert_array_equal(x1.numpy(), b.batch(8)[0].numpy())


def test_lone_windows_are_padded_but_shorter_segments_refused() -> None:
    lone = np.arange(2048, dtype=np.float32)  # one window: no margin for a faster-speed crop
    aug = Augmenter([lone, lone + 1], np.array([0, 1]), window=2048, config=AugmentConfig(), seed=0)
    x, _ = aug.batch(16)
    assert tuple(x.shape) == (16, 1, 2048) and torch.isfinite(x).all()
    with pytest.raises(ModelsError, match="shorter than the 2048-sample window"):
        Augmenter([np.zeros(2000, np.float32)], np.array([0]), window=2048, config=AugmentConfig(), seed=0)


def test_eq_zero_db_is_identity_and_lowpass_removes_high_band() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((4, 2048)).astype(np.float32))
    same = apply_eq(x, np.zeros((4, 1025)))
    np.testing.assert_allclose(same.numpy(), x.numpy(), atol=1e-5)
    cfg = AugmentConfig(p_eq=1.0, eq_tilt_db=0.0, eq_peak_db=0.0, lowpass_hz=(2000.0, 2000.0))
    db = random_eq_db(1025, 64, cfg, rng)
    assert db.shape == (64, 1025) and db.max() <= 1e-9
    on = db[:, -1] < -20  # rows where the random low-pass was drawn
    assert 10 < on.sum() < 54
    y = apply_eq(torch.from_numpy(rng.standard_normal((64, 2048)).astype(np.float32)), db).numpy()
    hi = (np.abs(np.fft.rfft(y, axis=1))[:, 900:] ** 2).mean(axis=1)
    lo = (np.abs(np.fft.rfft(y, axis=1))[:, 50:300] ** 2).mean(axis=1)
    assert np.all(hi[on] < 0.05 * lo[on])  # order >= 2 at >= 2.6 x corner


@pytest.mark.parametrize("snr", [-4.0, 0.0, 10.0])
def test_noise_hits_requested_snr(snr: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.sin(torch.arange(4096, dtype=torch.float32) / 5).repeat(16, 1)
    y = add_noise(x, np.full(16, snr), np.ones(16, bool), gen)
    measured = 10 * np.log10((x ** 2).mean().item() / ((y - x) ** 2).mean().item())
    assert abs(measured - snr) < 0.3
    off = add_noise(x, np.full(16, snr), np.zeros(16, bool), gen)
    assert torch.equal(off, x)
