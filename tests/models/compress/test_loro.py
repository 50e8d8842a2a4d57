"""Leave-one-rig-out folds for compression: sides by rig, fault-type labels, recording-level scores."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.models.classes import FAULT_TYPES
from edgevib.models.compress import loro
from edgevib.models.compress.errors import CompressError
from edgevib.models.data import Recording


def _recs() -> list[Recording]:
    rng = np.random.default_rng(0)
    out = []
    for rig in ("a", "b", "c"):
        for label, size in (("normal", 0.0), ("IR", 0.007), ("OR", 0.0)):
            # the same file name on every rig, as hit-sb and hit-sq have
            out.append(Recording(rng.standard_normal(6000).astype(np.float32), 12000.0, 1797.0, label, size,
                                 source=f"{label}.npz", rig=rig))
    return out


def test_fold_keeps_each_rig_on_one_side() -> None:
    recs = _recs()
    assert loro.rigs(recs) == ["a", "b", "c"]
    train, test = loro.fold(recs, "b", window=1024, train_hop=512, test_hop=1024)
    assert train.classes == test.classes == FAULT_TYPES
    assert len(train.sources) == 6 and len(test.sources) == 3  # names repeat: sides are kept by rig
    held = [r for r in recs if r.rig == "b"]
    for i, r in enumerate(held):  # every test window is a cut of a held-out recording
        w = test.x[test.recording == i]
        assert np.array_equal(w[0], r.signal[:1024])
    train_sigs = {r.signal[:1024].tobytes() for r in recs if r.rig != "b"}
    assert not {w.tobytes() for w in test.x} & train_sigs
    assert set(test.y.tolist()) == {0, 2, 3}  # normal, IR (IR007 -> IR), OR
    with pytest.raises(CompressError, match="held-out rig"):
        loro.fold(recs, "z")


def test_score_recording_is_argmax_of_mean_probabilities() -> None:
    probs = np.array([[0.6, 0.4], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8]])
    y, rec = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    s = loro.score(probs, y, rec)
    assert s["window_acc"] == 0.5  # windows 0 and 3 right
    # recording 0: mean (0.3, 0.7) -> 1, wrong; recording 1: mean (0.55, 0.45) -> 0, wrong
    assert s["recording_acc"] == 0.0 and s["n_recordings"] == 2 and s["recordings_right"] == 0
    with pytest.raises(CompressError, match="probabilities"):
        loro.score(probs[:3], y, rec)
    other = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.9, 0.1]])  # windows 0 and 2 agree
    s = loro.score(probs, y, rec, ref=other)
    assert s["agree_windows"] == 0.5 and s["agree_recordings"] == 0.5  # recording 0: 1 vs 0; 1: 0 vs 0
    with pytest.raises(CompressError, match="same windows"):
        loro.score(probs, y, rec, ref=other[:, :1])
