"""Cut recordings into windows and split them train/test without leakage.

Two honest protocols: :func:`time_split` (per recording, the first part trains and
the last ``test_frac`` tests; no window crosses the cut) and :func:`load_split`
(whole recordings held out by motor load). :func:`count_overlaps` /
:func:`check_no_leak` verify that no test window shares samples with a train window
of the same recording. Every recording is resampled to ``fs`` before windowing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from edgevib.models.classes import CLASSES_10, label_index
from edgevib.models.data import MODEL_FS, Recording, resample
from edgevib.models.errors import SplitError

log = logging.getLogger(__name__)
_COMP = "models.split"


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare by identity
class WindowSet:
    """Windows of equal length ``W``: ``x`` float32 [N, W], ``y`` int64 [N] indexing ``classes``,
    ``recording`` [N] indexing ``sources``, ``start`` [N] (sample of the resampled recording)."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    recording: np.ndarray
    start: np.ndarray
    sources: tuple[str, ...]
    fs: float
    rpm: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.ndim != 2 or any(len(a) != n for a in (self.y, self.recording, self.start, self.rpm)):
            raise SplitError(_COMP, f"WindowSet arrays of shapes x{self.x.shape}, y{self.y.shape}, "
                             f"recording{self.recording.shape}, start{self.start.shape}, rpm{self.rpm.shape}",
                             "give x as [N, W] and one y/recording/start/rpm entry per window")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def window(self) -> int:
        return int(self.x.shape[1])

    def x3d(self) -> np.ndarray:
        """``x`` as [N, 1, W], the ONNX contract's input layout."""
        return self.x[:, None, :]

    def subset(self, mask: np.ndarray) -> WindowSet:
        """Windows selected by a boolean mask or an index array (sources/classes kept)."""
        return WindowSet(self.x[mask], self.y[mask], self.classes, self.recording[mask], self.start[mask],
                         self.sources, self.fs, self.rpm[mask])

    def counts(self) -> dict[str, int]:
        """Windows per class."""
        return {c: int(n) for c, n in zip(self.classes, np.bincount(self.y, minlength=len(self.classes)),
                                          strict=True)}

    def source_of(self) -> np.ndarray:
        """Source (file) name of every window, [N] object array."""
        return np.asarray(self.sources, dtype=object)[self.recording]


def windows(recs: Sequence[Recording], window: int = 2048, hop: int = 1024, classes: Sequence[str] = CLASSES_10,
            *, fs: float = MODEL_FS, spans: Sequence[tuple[int, int]] | None = None) -> WindowSet:
    """Windows of every recording whose class is in ``classes`` (others are left out).

    ``spans[i] = (lo, hi)`` limits recording ``i`` to samples ``lo <= s < hi`` (after resampling):
    only windows lying wholly inside are cut.
    """
    if window < 1 or hop < 1:
        raise SplitError(_COMP, f"window={window}, hop={hop}", "use positive sample counts, e.g. 2048 and 1024")
    classes = tuple(classes)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    rs: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    rpms: list[np.ndarray] = []
    sources: list[str] = []
    for i, rec in enumerate(recs):
        y = label_index(rec.class_name, classes)
        if y is None:
            continue
        sig = resample(rec, fs).signal
        lo, hi = spans[i] if spans is not None else (0, len(sig))
        lo, hi = max(0, lo), min(len(sig), hi)
        starts = np.arange(lo, hi - window + 1, hop, dtype=np.int64)
        if len(starts) == 0:
            log.warning("%s: no %d-sample window fits in samples %d..%d", rec.source, window, lo, hi)
            continue
        idx = starts[:, None] + np.arange(window)
        xs.append(sig[idx])
        ys.append(np.full(len(starts), y, np.int64))
        rs.append(np.full(len(starts), len(sources), np.int64))
        ss.append(starts)
        rpms.append(np.full(len(starts), rec.rpm))
        sources.append(rec.source)
    if not xs:
        raise SplitError(_COMP, f"no windows of classes {list(classes)} from {len(recs)} recordings",
                         "check --classes against the recordings in --data, and that each holds >= one window")
    return WindowSet(np.concatenate(xs).astype(np.float32), np.concatenate(ys), classes, np.concatenate(rs),
                     np.concatenate(ss), tuple(sources), float(fs), np.concatenate(rpms))


def time_split(recs: Sequence[Recording], window: int = 2048, hop: int = 1024, test_frac: float = 0.3,
               classes: Sequence[str] = CLASSES_10, *, fs: float = MODEL_FS, gap: int = 0
               ) -> tuple[WindowSet, WindowSet]:
    """Per recording: train windows from the first ``1 - test_frac``, test from the rest, ``gap``
    samples apart at least; no window crosses the cut."""
    if not 0 < test_frac < 1:
        raise SplitError(_COMP, f"test_frac={test_frac}", "use a fraction between 0 and 1, e.g. 0.3")
    lens = [int(round(len(r.signal) * fs / r.fs)) for r in recs]
    cuts = [int(n * (1 - test_frac)) for n in lens]
    train = windows(recs, window, hop, classes, fs=fs, spans=[(0, c) for c in cuts])
    test = windows(recs, window, hop, classes, fs=fs, spans=[(c + gap, n) for c, n in zip(cuts, lens, strict=True)])
    check_no_leak(train, test)
    return train, test


def load_split(recs: Sequence[Recording], window: int = 2048, hop: int = 1024, test_loads: Sequence[int] = (3,),
               classes: Sequence[str] = CLASSES_10, *, fs: float = MODEL_FS) -> tuple[WindowSet, WindowSet]:
    """Whole recordings held out: those at motor loads ``test_loads`` test, the rest train."""
    held = [r.load_hp in test_loads for r in recs]
    if all(held) or not any(held):
        raise SplitError(_COMP, f"test_loads={tuple(test_loads)} leaves {'no train' if all(held) else 'no test'} "
                         "recordings", "hold out loads that some, not all, recordings have (0-3 for CWRU)")
    train = windows([r for r, h in zip(recs, held, strict=True) if not h], window, hop, classes, fs=fs)
    test = windows([r for r, h in zip(recs, held, strict=True) if h], window, hop, classes, fs=fs)
    check_no_leak(train, test)
    return train, test


def count_overlaps(train: WindowSet, test: WindowSet, min_gap: int = 0) -> int:
    """Test windows sharing a sample with (or lying within ``min_gap`` samples of) a train
    window of the same recording (matched by source name)."""
    leaks = 0
    train_src, test_src = train.source_of(), test.source_of()
    for src in set(train.sources) & set(test.sources):
        t = np.sort(train.start[train_src == src])
        s = test.start[test_src == src]
        # two windows of lengths Wa (train) and Wb (test) overlap iff t - Wb < s < t + Wa
        lo = np.searchsorted(t, s - train.window - min_gap, side="right")
        hi = np.searchsorted(t, s + test.window + min_gap, side="left")
        leaks += int(np.count_nonzero(hi > lo))
    return leaks


def check_no_leak(train: WindowSet, test: WindowSet, min_gap: int = 0) -> None:
    """Raise :class:`SplitError` if any test window overlaps a train window of its recording."""
    n = count_overlaps(train, test, min_gap)
    if n:
        raise SplitError(_COMP, f"{n} of {len(test)} test windows overlap train windows of the same recording",
                         "split by time (time_split) or by whole recordings (load_split), not by shuffled windows")
