"""Leave-one-rig-out: the accuracy a user can expect on a machine the model never saw.

For each rig, train on the other rigs (plus simulated bearings) and test on it. Nothing is
chosen on the test rig: the features and the model's settings are fixed in code, and the
softmax temperature is fitted on out-of-rig predictions *among the training rigs*.

Reported per held-out rig: window and recording accuracy (a recording's verdict is the
argmax of its mean window probabilities), per-class accuracy, the window confusion matrix,
expected calibration error (top label, 10 equal-width bins), and false fault decisions on
healthy recordings (windows and recordings). A baseline on the raw level alone (log RMS)
shows what gain could do by itself.

>>> ece(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1]))  # bins: 0.9 right, 0.8 wrong
0.45
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from edgevib.models.faulttype import CLASSES, FeatureSet, cell_weights, fit, train

log = logging.getLogger(__name__)


def ece(probs: npt.NDArray[Any], y: npt.NDArray[Any], bins: int = 10) -> float:
    """Expected calibration error of the top label."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for lo in np.linspace(0, 1, bins, endpoint=False):
        m = (conf > lo) & (conf <= lo + 1 / bins)
        if m.any():
            total += m.sum() / len(y) * abs(float(np.mean(pred[m] == y[m])) - float(conf[m].mean()))
    return round(float(total), 4)


def score(probs: npt.NDArray[Any], test: FeatureSet) -> dict[str, Any]:
    """The report of one held-out rig, from its window probabilities."""
    pred, y = probs.argmax(axis=1), test.y
    cm = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(cm, (y, pred), 1)
    recs = np.unique(test.rec)
    rec_y = np.array([y[test.rec == r][0] for r in recs])
    rec_pred = np.array([probs[test.rec == r].mean(axis=0).argmax() for r in recs])
    per_class = {}
    for c, name in enumerate(CLASSES):
        if (y == c).any():
            per_class[name] = {"windows": round(float(np.mean(pred[y == c] == c)), 4),
                               "recordings": round(float(np.mean(rec_pred[rec_y == c] == c)), 4),
                               "n_recordings": int(np.sum(rec_y == c))}
    healthy = y == 0
    return {
        "window_acc": round(float(np.mean(pred == y)), 4),
        "recording_acc": round(float(np.mean(rec_pred == rec_y)), 4),
        "n_windows": int(len(y)), "n_recordings": int(len(recs)),
        "per_class": per_class, "confusion": cm.tolist(), "ece": ece(probs, y),
        "healthy_false_fault_windows": round(float(np.mean(pred[healthy] != 0)), 4) if healthy.any() else None,
        "healthy_false_fault_recordings": int(np.sum((rec_y == 0) & (rec_pred != 0))),
        "wrong_recordings": [test.sources[r] + f" ({CLASSES[t]} -> {CLASSES[p]})"
                             for r, t, p in zip(recs, rec_y, rec_pred, strict=True) if t != p],
    }


def rig_out(real: FeatureSet, sim: FeatureSet | None = None, *, sim_weight: float = 1.0, l2: float = 1e-2,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Leave each rig of ``real`` out in turn; ``sim`` joins every training set."""
    rigs = [str(r) for r in np.unique(real.rig)]
    out: dict[str, Any] = {"protocol": "leave-one-rig-out", "classes": list(CLASSES), "rigs": {}, "rms_baseline": {}}
    for rig in rigs:
        held = real.rig == rig
        train_set = real.select(~held) if sim is None else FeatureSet.concat([real.select(~held), sim])
        test = real.select(held)
        model = train(train_set, sim_weight=sim_weight, l2=l2)
        out["rigs"][rig] = {**score(model.predict_proba(test.x), test), "temperature": round(model.temperature, 3),
                            "trained_on": sorted(str(r) for r in np.unique(train_set.rig))}
        base_train = real.select(~held)  # the level baseline: real rigs only (simulated gain is arbitrary)
        base = fit(base_train.log_rms[:, None], base_train.y, cell_weights(base_train.y, base_train.rig))
        out["rms_baseline"][rig] = score(base.predict_proba(test.log_rms[:, None]), test)["window_acc"]
        if progress:
            r = out["rigs"][rig]
            progress(f"{rig}: windows {r['window_acc']:.3f}, recordings {r['recording_acc']:.3f}, ECE {r['ece']:.3f}")
    rs = out["rigs"].values()
    out["mean"] = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in ("window_acc", "recording_acc", "ece")}
    out["rms_baseline"]["mean"] = round(float(np.mean(list(out["rms_baseline"].values()))), 4)
    return out


__all__ = ["ece", "rig_out", "score"]
