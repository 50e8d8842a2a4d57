"""The fused verdict: rules, the wire field, and the agent attaching it to raised alerts."""

from __future__ import annotations

import pytest
from edgevib.edge.verdict import fuse, type_probabilities

from edgevib import protocol as proto
from edgevib.protocol.errors import ProtocolError


def test_agreement_carries_the_type_with_the_models_confidence() -> None:
    v = fuse({"normal": 0.02, "B": 0.03, "IR": 0.9, "OR": 0.05}, "IR", 0.4)
    assert (v.fault_type, v.confidence, v.carried_by) == ("IR", 0.9, ("model", "physics"))


def test_disagreement_is_unknown_not_a_confident_guess() -> None:
    v = fuse({"normal": 0.0, "B": 0.0, "IR": 0.97, "OR": 0.03}, "OR", 3.0)
    assert v.fault_type == "unknown" and v.model == "IR" and v.physics == "OR"
    assert v.carried_by == ("model", "physics", "anomaly") and v.confidence == pytest.approx(1.0)


@pytest.mark.parametrize(("probs", "want"), [
    ({"normal": 0.1, "B": 0.05, "IR": 0.8, "OR": 0.05}, "IR"),  # concentrated on one type
    ({"normal": 0.1, "B": 0.3, "IR": 0.35, "OR": 0.25}, "unknown"),  # abnormal, spread over types
])
def test_silent_physics_leaves_the_model_or_unknown(probs: dict[str, float], want: str) -> None:
    assert fuse(probs, "normal", None).fault_type == want
    assert fuse(probs, None, None).carried_by == ("model",)


def test_ten_class_probabilities_sum_by_type() -> None:
    tp = type_probabilities({"normal": 0.1, "IR007": 0.3, "IR021": 0.4, "OR014": 0.2})
    assert tp == pytest.approx({"normal": 0.1, "IR": 0.7, "OR": 0.2})
    assert fuse({"normal": 0.1, "IR007": 0.3, "IR021": 0.4, "OR014": 0.2}, "IR", None).fault_type == "IR"


def test_verdict_is_validated_on_the_wire() -> None:
    a = proto.make_alert(site="p", gateway="g", sensor="s", kind="fault", state="raised", t_ns=1, cls="OR",
                         probability=0.9)
    a["verdict"] = fuse({"normal": 0.1, "OR": 0.9}, "OR", None).to_dict()
    assert proto.parse_alert(proto.dumps(a))["verdict"]["fault_type"] == "OR"
    a["verdict"] = {**a["verdict"], "fault_type": "XR"}
    with pytest.raises(ProtocolError, match="fault_type"):
        proto.validate_alert(a)
    a["verdict"] = {"fault_type": "OR", "confidence": 0.5, "carried_by": ["gut feeling"]}
    with pytest.raises(ProtocolError, match="carried_by"):
        proto.validate_alert(a)
