"""Per-sensor alert state machine: k-of-n confirmation, hysteresis, cooldown.

* raise class ``c`` when ``c`` scored >= ``p_on`` in at least ``k`` of the last ``n`` windows
  (from class probabilities, :meth:`Alerter.update_probs`: the score is P(faulty) and ``c``
  the fault class with the most probability over those windows);
* clear only after ``m`` consecutive windows below ``p_off`` (< ``p_on``: hysteresis);
* never re-raise the same class within ``cooldown_s`` of its last raise; a different
  class may raise at once (the old one is cleared first, so the cloud sees one active alert).

The same machine serves anomaly alerts: feed ``score / threshold`` with label ``anomaly``.

>>> t = [0.0]
>>> a = Alerter(AlertPolicy(k=2, n=3, m=2, p_on=0.8, p_off=0.5), clock=lambda: t[0])
>>> [e.state for v in (0.9, 0.1, 0.95) for e in a.update("IR007", v)]
['raised']
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from edgevib.errors import ConfigError

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class AlertPolicy:
    """Thresholds of the state machine; ``p_off <= p_on`` and ``k <= n``."""

    p_on: float = 0.8
    p_off: float = 0.5
    k: int = 3
    n: int = 5
    m: int = 5
    cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not (0 <= self.p_off <= self.p_on):
            raise ConfigError("edge.alerting", f"p_off={self.p_off}, p_on={self.p_on}",
                              "use 0 <= p_off <= p_on (p_off < p_on gives hysteresis)")
        if not (1 <= self.k <= self.n) or self.m < 1:
            raise ConfigError("edge.alerting", f"k={self.k}, n={self.n}, m={self.m}", "use 1 <= k <= n and m >= 1")
        if self.cooldown_s < 0:
            raise ConfigError("edge.alerting", f"cooldown_s={self.cooldown_s}", "use a cooldown >= 0 seconds")


@dataclass(frozen=True)
class AlertEvent:
    """A state change: ``raised`` (``value`` = mean score of the confirming windows) or ``cleared``.
    From class probabilities, ``class_p`` is the raised class's own mean probability there."""

    state: str
    label: str
    value: float
    t: float
    windows: int
    class_p: float | None = None


@dataclass
class AlertCounters:
    windows: int = 0
    raised: int = 0
    cleared: int = 0
    suppressed: int = 0  # confirmations swallowed by the cooldown
    last_raise: dict[str, float] = field(default_factory=dict)


class Alerter:
    """One sensor's alert state; feed one ``(label, value)`` per window."""

    def __init__(self, policy: AlertPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or AlertPolicy()
        self.clock = clock
        self.active: str | None = None
        self.counters = AlertCounters()
        # the last n windows' (label, score) and class probabilities, oldest first; lists, not
        # deque(maxlen=n): a deque takes ~620 bytes for its first block, x 4 per sensor (fault + anomaly)
        self._recent: list[tuple[str, float]] = []
        self._rows: list[npt.NDArray[np.float64]] = []
        self._classes: tuple[str, ...] | None = None
        self._below = 0

    def update(self, label: str, value: float) -> list[AlertEvent]:
        """Record one window's best non-normal ``label`` and its score; return state changes."""
        p, now = self.policy, self.clock()
        self.counters.windows += 1
        _push(self._recent, (label, float(value)), p.n)
        events: list[AlertEvent] = []
        if self.active is not None:
            self._below = self._below + 1 if value < p.p_off else 0
            if self._below >= p.m:
                events.append(self._clear(now))
        hits = Counter(lbl for lbl, v in self._recent if v >= p.p_on)
        if hits:
            best, count = max(hits.items(), key=lambda kv: (kv[1], self._mean(kv[0])))
            if count >= p.k and best != self.active:
                last = self.counters.last_raise.get(best)
                if last is not None and now - last < p.cooldown_s:
                    self.counters.suppressed += 1
                else:
                    if self.active is not None:
                        events.append(self._clear(now))
                    events.append(self._raise(best, now))
        return events

    def update_probs(self, probs: npt.ArrayLike, classes: Sequence[str], normal: str = "normal") -> list[AlertEvent]:
        """Like :meth:`update` with one window's class probabilities.

        The vote is the probability that the window is faulty at all (1 - P(normal)), so a
        window that is clearly abnormal but split between fault types (0.45 IR, 0.43 OR on a
        machine the model never saw) still counts; the label is the fault class with the most
        probability summed over the last ``n`` windows, so such a split does not scatter the
        votes over labels. The fused verdict (edge/verdict.py) then says whether the type is
        established. A model without a ``normal`` class votes with its best fault class."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        top_fault(p, classes, normal)  # validates shape and classes
        self._classes = tuple(classes)
        _push(self._rows, p, self.policy.n)
        mass = np.sum(self._rows, axis=0)
        label, _ = top_fault(mass, classes, normal)
        value = 1.0 - float(p[list(classes).index(normal)]) if normal in classes else float(p[list(classes).index(label)])
        return self.update(label, value)

    def _mean(self, label: str) -> float:
        vals = [v for lbl, v in self._recent if lbl == label and v >= self.policy.p_on]
        return float(np.mean(vals)) if vals else 0.0

    def _raise(self, label: str, now: float) -> AlertEvent:
        self.active, self._below = label, 0
        self.counters.raised += 1
        self.counters.last_raise[label] = now
        log.info("alert raised: %s", label)
        return AlertEvent("raised", label, self._mean(label), now, len(self._recent), self._class_p(label))

    def _class_p(self, label: str) -> float | None:
        """Mean probability of ``label`` itself over the confirming windows (``update_probs`` only)."""
        if self._classes is None or len(self._rows) != len(self._recent) or label not in self._classes:
            return None
        i = self._classes.index(label)
        ps = [float(r[i]) for r, (lbl, v) in zip(self._rows, self._recent, strict=True)
              if lbl == label and v >= self.policy.p_on]
        return float(np.mean(ps)) if ps else None

    def _clear(self, now: float) -> AlertEvent:
        label, self.active, self._below = self.active or "", None, 0
        self.counters.cleared += 1
        log.info("alert cleared: %s", label)
        return AlertEvent("cleared", label, 0.0, now, len(self._recent))


def _push(items: list[_T], item: _T, n: int) -> None:
    """Append, keeping the last ``n``."""
    items.append(item)
    if len(items) > n:
        del items[0]


def top_fault(probs: npt.ArrayLike, classes: Sequence[str], normal: str = "normal") -> tuple[str, float]:
    """The most probable non-normal class of one window and its probability."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    idx = [i for i, c in enumerate(classes) if c != normal]
    if len(p) != len(classes) or not idx:
        raise ConfigError("edge.alerting", f"{len(p)} probabilities for classes {list(classes)}",
                          "pass one probability per class, with at least one fault class")
    best = max(idx, key=lambda i: p[i])
    return classes[best], float(p[best])
