"""Leak-free splits: no test window shares samples with a train window of its recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.models.classes import CLASSES_10
from edgevib.models.data import Recording, load_dir
from edgevib.models.errors import SplitError
from edgevib.models.split import (
    WindowSet,
    check_no_leak,
    count_overlaps,
    load_split,
    time_split,
    windows,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def _rec(n: int, label: str = "IR", size: float = 0.007, load: int = 0, fs: float = 12000.0,
         name: str = "r") -> Recording:
    sig = np.arange(n, dtype=np.float32)  # sample value == sample index: windows are traceable
    return Recording(sig, fs, 1797.0, label, size, "", load, name)


def test_windows_shapes_and_labels() -> None:
    ws = windows([_rec(10_000), _rec(5000, "normal", 0.0, name="n")], 2048, 1024)
    assert ws.x.dtype == np.float32 and ws.x.shape[1] == 2048 and ws.y.dtype == np.int64
    assert ws.x3d().shape == (len(ws), 1, 2048)
    assert ws.counts()["IR007"] == 8 and ws.counts()["normal"] == 3
    np.testing.assert_array_equal(ws.x[:, 0], ws.start.astype(np.float32))
    sub = ws.subset(ws.y == CLASSES_10.index("normal"))
    assert len(sub) == 3 and set(sub.source_of()) == {"n"}


def test_time_split_respects_the_cut() -> None:
    recs = [_rec(100_000, name="a"), _rec(40_000, "B", 0.014, name="b"), _rec(160_000, "normal", 0.0, fs=48000,
                                                                                   name="c")]
    train, test = time_split(recs, 2048, 512, test_frac=0.3)
    for i, src in enumerate(train.sources):
        n = {"a": 100_000, "b": 40_000, "c": 40_000}[src]
        cut = int(n * 0.7)
        tr = train.start[train.recording == i]
        assert tr.max() + 2048 <= cut
        te = test.start[test.source_of() == src]
        assert te.min() >= cut and te.max() + 2048 <= n
    assert count_overlaps(train, test) == 0
    # 48 kHz was resampled before windowing: window 2048 covers 2048/12000 s
    assert train.fs == 12000.0


def test_naive_shuffled_split_is_detected() -> None:
    ws = windows([_rec(60_000, name="a"), _rec(60_000, "OR", 0.021, name="b")], 2048, 1024)
    perm = np.random.default_rng(0).permutation(len(ws))
    train, test = ws.subset(perm[: len(ws) * 7 // 10]), ws.subset(perm[len(ws) * 7 // 10:])
    assert count_overlaps(train, test) > 0
    with pytest.raises(SplitError, match="overlap train windows"):
        check_no_leak(train, test)


def test_neighbours_flagged_with_a_gap() -> None:
    ws = windows([_rec(20_000)], 2048, 2048)  # touching, not overlapping
    train, test = ws.subset(np.arange(len(ws)) < 5), ws.subset(np.arange(len(ws)) >= 5)
    assert count_overlaps(train, test) == 0
    assert count_overlaps(train, test, min_gap=1) == 1


def test_bad_arguments() -> None:
    with pytest.raises(SplitError, match="test_frac"):
        time_split([_rec(10_000)], test_frac=1.5)
    with pytest.raises(SplitError, match="no test"):
        load_split([_rec(10_000, load=0)], test_loads=(3,))
    with pytest.raises(SplitError, match="no windows"):
        windows([_rec(1000)], 2048, 1024)


@pytest.mark.data
def test_real_splits_do_not_leak(cwru_dir: Path) -> None:
    recs = load_dir(cwru_dir)
    train, test = time_split(recs, 2048, 1024)
    assert count_overlaps(train, test) == 0
    assert set(train.counts()) == set(CLASSES_10) and min(test.counts().values()) > 50
    assert "OR007@3" not in train.classes and all(" " not in s for s in train.sources)
    ltrain, ltest = load_split(recs, 2048, 1024, test_loads=(3,))
    assert count_overlaps(ltrain, ltest) == 0 and not set(ltrain.sources) & set(ltest.sources)
    assert all("load3" in s for s in ltest.sources) and min(ltest.counts().values()) > 50
    # the naive protocol on the same data leaks
    both = windows(recs, 2048, 1024)
    perm = np.random.default_rng(0).permutation(len(both))
    assert count_overlaps(both.subset(perm[:3000]), both.subset(perm[3000:])) > 100


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=40), st.lists(st.integers(0, 5000), min_size=1,
       max_size=40), st.integers(1, 600), st.integers(0, 50))
@settings(max_examples=60, deadline=None)
def test_count_overlaps_matches_brute_force(tr: list[int], te: list[int], w: int, gap: int) -> None:
    def ws(starts: list[int]) -> WindowSet:
        n = len(starts)
        return WindowSet(np.zeros((n, w), np.float32), np.zeros(n, np.int64), ("normal", "IR"),
                         np.zeros(n, np.int64), np.array(starts, np.int64), ("rec",), 12000.0, np.zeros(n))

    brute = sum(any(t - w - gap < s < t + w + gap for t in tr) for s in te)
    assert count_overlaps(ws(tr), ws(te), gap) == brute
