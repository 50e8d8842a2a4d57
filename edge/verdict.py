"""One verdict per fault alert: the classifier, the envelope physics check and the sensor's
own anomaly baseline fused into one fault type, with ``unknown`` allowed.

On a machine it never saw, a confident wrong type is worse than an honest "abnormal, type
not established". The rules, in order (``T_m`` = the model's most probable fault type,
``T_p`` = the physics check's type, ``normal`` when no fault family stands out):

1. ``T_p == T_m``: the type is ``T_m``; carried by model and physics.
2. the physics check sees no fault family (or could not run): ``T_m`` if the model's
   fault probability is concentrated on it (share >= ``min_share``), else ``unknown``;
   carried by the model.
3. the physics check names another fault type: ``unknown``; both are named in the verdict.

``confidence`` is the model's calibrated probability of the verdict's type (of *any* fault
for ``unknown``). ``anomaly`` joins ``carried_by`` when the sensor's baseline distance
exceeds its threshold (ratio >= 1), and the ratio itself is the severity relative to the
sensor's own healthy state.

>>> v = fuse({"normal": 0.05, "IR": 0.9, "OR": 0.05}, "IR", 2.5)
>>> v.fault_type, v.carried_by
('IR', ('model', 'physics', 'anomaly'))
>>> fuse({"normal": 0.1, "IR": 0.8, "OR": 0.1}, "OR", None).fault_type
'unknown'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgevib.models.classes import fault_type

from edgevib.protocol import VERDICTS

MIN_SHARE = 0.6


@dataclass(frozen=True)
class Verdict:
    fault_type: str  # one of VERDICTS
    confidence: float
    carried_by: tuple[str, ...]  # of "model", "physics", "anomaly"
    model: str  # the model's most probable fault type
    physics: str | None  # the physics check's type, None if it could not run
    anomaly_ratio: float | None  # baseline distance / threshold, None before the baseline is learnt

    def to_dict(self) -> dict[str, Any]:
        """The alert's ``verdict`` field (docs/protocol.md)."""
        return {"fault_type": self.fault_type, "confidence": round(self.confidence, 4),
                "carried_by": list(self.carried_by), "model": self.model, "physics": self.physics,
                "anomaly_ratio": None if self.anomaly_ratio is None else round(self.anomaly_ratio, 3)}


def type_probabilities(probs: Mapping[str, float]) -> dict[str, float]:
    """Class probabilities summed by fault type (``IR007`` + ``IR014`` -> ``IR``)."""
    out: dict[str, float] = {}
    for cls, p in probs.items():
        t = fault_type(cls)
        out[t] = out.get(t, 0.0) + float(p)
    return out


def fuse(probs: Mapping[str, float], physics: str | None, anomaly_ratio: float | None,
         min_share: float = MIN_SHARE) -> Verdict:
    """The verdict of one raised alert from the model's (mean) class probabilities, the physics
    check's fault type and the sensor's anomaly ratio (see the module doc for the rules)."""
    tp = type_probabilities(probs)
    faults = {t: p for t, p in tp.items() if t != "normal"}
    t_m = max(faults, key=lambda t: faults[t]) if faults else "unknown"
    p_fault = sum(faults.values())
    p_m = faults.get(t_m, 0.0)
    if physics == t_m:
        out, conf, by = t_m, p_m, ["model", "physics"]
    elif physics in (None, "normal"):
        concentrated = p_fault > 0 and p_m / p_fault >= min_share
        out, conf, by = (t_m, p_m, ["model"]) if concentrated else ("unknown", p_fault, ["model"])
    else:
        out, conf, by = "unknown", p_fault, ["model", "physics"]
    if anomaly_ratio is not None and anomaly_ratio >= 1.0:
        by.append("anomaly")
    return Verdict(out, float(min(1.0, max(0.0, conf))), tuple(by), t_m, physics, anomaly_ratio)


__all__ = ["MIN_SHARE", "VERDICTS", "Verdict", "fuse", "type_probabilities"]
