"""Alert state machine: one property per test."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.alerting import Alerter, AlertEvent, AlertPolicy, top_fault

from edgevib.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _feed(a: Alerter, clock: Clock, seq: list[tuple[str, float]], dt: float = 1.0) -> list[AlertEvent]:
    out: list[AlertEvent] = []
    for label, v in seq:
        out += a.update(label, v)
        clock.t += dt
    return out


def _mk(**kw: float) -> tuple[Alerter, Clock]:
    c = Clock()
    return Alerter(AlertPolicy(**{"p_on": 0.8, "p_off": 0.5, "k": 3, "n": 5, "m": 4, "cooldown_s": 100.0, **kw}), c), c  # type: ignore[arg-type]


def test_one_odd_window_never_raises() -> None:
    a, c = _mk()
    seq = [("IR007", 0.1)] * 10 + [("IR007", 0.99)] + [("IR007", 0.1)] * 10
    assert _feed(a, c, seq) == []
    # two odd windows inside any 5 are still below k = 3
    assert _feed(a, c, [("OR021", 0.95), ("OR021", 0.2), ("OR021", 0.1), ("OR021", 0.3)] * 5) == []


def test_k_of_n_raises_once_for_a_sustained_fault() -> None:
    a, c = _mk()
    ev = _feed(a, c, [("IR007", 0.9), ("IR007", 0.3), ("IR007", 0.85), ("IR007", 0.95)] + [("IR007", 0.9)] * 200)
    assert [(e.state, e.label) for e in ev] == [("raised", "IR007")]
    assert ev[0].t == 3.0 and ev[0].value == pytest.approx((0.9 + 0.85 + 0.95) / 3)
    assert a.active == "IR007" and a.counters.raised == 1


def test_hysteresis_clears_only_after_m_windows_below_p_off() -> None:
    a, c = _mk()
    _feed(a, c, [("B014", 0.9)] * 5)
    # values between p_off and p_on keep the alert; a dip below p_off for < m windows does too
    assert _feed(a, c, [("B014", 0.6)] * 20 + [("B014", 0.2)] * 3 + [("B014", 0.7)]) == []
    ev = _feed(a, c, [("B014", 0.2)] * 4)
    assert [(e.state, e.label) for e in ev] == [("cleared", "B014")] and a.active is None


def test_cooldown_blocks_same_class_but_not_a_new_class() -> None:
    a, c = _mk()
    _feed(a, c, [("IR007", 0.9)] * 3)  # raised at t=2
    _feed(a, c, [("IR007", 0.1)] * 5)  # cleared
    assert _feed(a, c, [("IR007", 0.9)] * 10) == []  # t = 8..17 < 2 + 100
    assert a.counters.suppressed > 0
    ev = _feed(a, c, [("OR007", 0.95)] * 5)
    assert [(e.state, e.label) for e in ev] == [("raised", "OR007")]
    c.t = 200.0
    _feed(a, c, [("x", 0.0)] * 4)
    ev = _feed(a, c, [("IR007", 0.9)] * 3)
    assert [(e.state, e.label) for e in ev] == [("raised", "IR007")]


def test_changed_class_clears_old_then_raises_new() -> None:
    a, c = _mk()
    _feed(a, c, [("IR007", 0.9)] * 5)
    ev = _feed(a, c, [("IR014", 0.9)] * 5)
    assert [(e.state, e.label) for e in ev] == [("cleared", "IR007"), ("raised", "IR014")]
    assert a.counters.raised == 2 and a.active == "IR014"


def test_policy_validation_and_top_fault() -> None:
    with pytest.raises(ConfigError, match="p_off"):
        AlertPolicy(p_on=0.5, p_off=0.6)
    with pytest.raises(ConfigError, match="k=6"):
        AlertPolicy(k=6, n=5)
    classes = ("normal", "B007", "IR007")
    assert top_fault(np.array([0.9, 0.04, 0.06]), classes) == ("IR007", pytest.approx(0.06))
    with pytest.raises(ConfigError):
        top_fault([0.5, 0.5], classes)


def test_update_probs_uses_best_fault_class() -> None:
    a, c = _mk(k=2, n=3)
    classes = ("normal", "IR007", "OR007")
    ev = [e for _ in range(3) for e in a.update_probs([0.05, 0.05, 0.9], classes)]
    assert [(e.state, e.label) for e in ev] == [("raised", "OR007")]


def test_an_abnormal_window_split_between_fault_types_still_raises() -> None:
    """Clearly not normal, but no single type >= p_on (seen on a rig the model never saw)."""
    a, c = _mk(k=3, n=5)
    classes = ("normal", "B", "IR", "OR")
    rows = [[0.0, 0.12, 0.45, 0.43], [0.0, 0.1, 0.43, 0.47], [0.01, 0.12, 0.45, 0.42]] * 2
    ev = [e for r in rows for e in a.update_probs(r, classes)]
    assert [(e.state, e.label) for e in ev] == [("raised", "IR")]  # most probability over the windows
    assert ev[0].value == pytest.approx(0.997, abs=0.01) and ev[0].class_p == pytest.approx(0.443, abs=0.01)
    calm = _mk(k=3, n=5)[0]  # a window that is mostly normal never votes
    assert [e for _ in range(5) for e in calm.update_probs([0.5, 0.1, 0.2, 0.2], classes)] == []
