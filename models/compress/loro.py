"""Leave-one-rig-out folds and scores for compressing the fault-type CNN (issue 17).

The product's accuracy claim is leave-one-rig-out (docs/transfer.md): train on some rigs,
test on one the model never saw. :func:`fold` cuts one such fold from recordings already
resampled to the model rate: training windows from every recording of the other rigs
(``train_hop`` apart), test windows from every recording of the held-out rig (``test_hop``
apart), labelled by fault type (``normal``, ``B``, ``IR``, ``OR``). A recording lies wholly
on one side: its rig decides (file names repeat across rigs, so sides are kept by rig, not by name). :func:`score` reports window
accuracy and recording accuracy (a recording's verdict is the argmax of its mean window
probabilities, as :mod:`edgevib.models.rigout` scores the fault-type LR).

>>> score(np.array([[.9, .1], [.4, .6], [.2, .8]]), np.array([0, 0, 1]), np.array([0, 0, 1]))["recording_acc"]
1.0
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from edgevib.models.classes import FAULT_TYPES
from edgevib.models.compress.errors import CompressError
from edgevib.models.data import Recording
from edgevib.models.split import WindowSet, windows

log = logging.getLogger(__name__)
_COMP = "models.compress.loro"


def rigs(recs: Sequence[Recording]) -> list[str]:
    """The rigs of ``recs``, sorted."""
    return sorted({r.rig for r in recs})


def fold(recs: Sequence[Recording], held: str, *, window: int = 2048, train_hop: int = 1024,
         test_hop: int = 2048, classes: Sequence[str] = FAULT_TYPES) -> tuple[WindowSet, WindowSet]:
    """``(train, test)`` windows: train from the rigs other than ``held``, test from ``held``."""
    names = rigs(recs)
    if held not in names or len(names) < 2:
        raise CompressError(_COMP, f"held-out rig {held!r} among rigs {names}",
                            "hold out one of the recordings' rigs, with at least one other rig to train on")
    train_recs = [r for r in recs if r.rig != held]
    test_recs = [r for r in recs if r.rig == held]
    # windows() resamples to the model rate itself; recordings already there pass through unchanged
    train = windows(train_recs, window, train_hop, classes)
    test = windows(test_recs, window, test_hop, classes)
    log.info("fold %s: %d train windows from %d recordings (%s), %d test windows from %d recordings", held,
             len(train), len(train.sources), ",".join(n for n in names if n != held), len(test), len(test.sources))
    return train, test


def score(probs: npt.NDArray[Any], y: npt.NDArray[Any], recording: npt.NDArray[Any],
          ref: npt.NDArray[Any] | None = None) -> dict[str, Any]:
    """Window and recording accuracy of window probabilities ``probs`` [N, C] against ``y`` [N];
    ``recording`` [N] says which recording each window comes from. With ``ref`` (another model's
    probabilities on the same windows, e.g. the teacher's) also how often the two verdicts agree."""
    probs, y, recording = np.asarray(probs), np.asarray(y), np.asarray(recording)
    if probs.ndim != 2 or not len(probs) == len(y) == len(recording) or len(y) == 0:
        raise CompressError(_COMP, f"probs {probs.shape}, y {y.shape}, recording {recording.shape}",
                            "pass probabilities [N, C] and one label and recording index per window")
    recs = np.unique(recording)
    rec_y = np.array([y[recording == r][0] for r in recs])
    rec_pred = np.array([probs[recording == r].mean(axis=0).argmax() for r in recs])
    out = {"window_acc": float(np.mean(probs.argmax(axis=1) == y)),
           "recording_acc": float(np.mean(rec_pred == rec_y)),
           "n_windows": int(len(y)), "n_recordings": int(len(recs)),
           "recordings_right": int(np.sum(rec_pred == rec_y))}
    if ref is not None:
        ref = np.asarray(ref)
        if ref.shape != probs.shape:
            raise CompressError(_COMP, f"ref {ref.shape} beside probs {probs.shape}",
                                "pass the reference model's probabilities on the same windows")
        ref_pred = np.array([ref[recording == r].mean(axis=0).argmax() for r in recs])
        out["agree_windows"] = float(np.mean(probs.argmax(axis=1) == ref.argmax(axis=1)))
        out["agree_recordings"] = float(np.mean(rec_pred == ref_pred))
    return out


__all__ = ["fold", "rigs", "score"]
