"""Load shedding for alert latency: under overload, infer every m-th overlapping window.

The agent cuts a window every ``hop`` samples (1,024 for the default model: each sample is
in 8 windows). A core that cannot infer them all queues windows, and at ~100 % of the core a
queue's wait has no bound: a speed estimate or a heartbeat that lands on a full queue takes
seconds to drain. With ``latency_budget_ms`` set (``AgentConfig``; 0, the default, is off)
the agent sheds the overlap first, not the signal:

* every step reports the time it worked (not waiting for input) and the part of it spent
  inferring, and every batch its worst latency (frame received -> window inferred), to a
  :class:`Thinner`, which keeps both as shares of the core (moving averages over ~``TAU_S``);
* the factor m doubles (1 -> 2 -> 4 ... up to ``most``) when a batch's worst latency is over
  ``HIGH`` x budget **and** the core is busy (busy share >= ``SATURATED``), and only on
  evidence from windows cut under the current factor (arrived after the last change), so
  one backlog is not counted twice. A slow batch on an idle core is not overload: its wait
  for the batch deadline, a speed estimate or a heartbeat in the same step is there at any
  load, and thinning does not shorten it (measured: 67 % thinned at 42 % of a core left
  the p99 where it was, docs/edge_footprint.md);
* it halves again when the agent would stay under ``BUSY`` of its core with twice the
  inference (busy + inference share <= BUSY), and under the busy share at which it last had
  to raise, less ``MARGIN`` (a load that was too slow at the lower factor stays thinned
  until it falls), with that held for ``HOLD_S``, at least ``HOLD_S`` after the last change
  and after the first batch since (one dip of the moving averages does not flip it back, and
  an agent waiting for its sensors is not calm, it has no load yet: halving while idle sent
  150 sensors' first second to an unthinned core, p99 100-256 ms);
* the agent starts at ``most`` (start-up brings every sensor's first windows and reads at
  once) and comes down as the busy time allows;
* a sensor's k-th window is inferred when k % m == 0: the kept windows are evenly spaced
  at hop x m, and ``most`` (the agent passes window // (2 x hop)) keeps the hop at most half
  a window, so every sample is still in at least two inferred windows;
* a batch is cut to what fits ``BATCH_SHARE`` of the budget at the measured cost per window
  (:meth:`Thinner.batch_limit`, never under ``MIN_BATCH``): a window that arrives while a batch
  runs waits for that batch and then for its own, so two batches must fit the budget with
  room for a speed estimate (32 windows of the default model take 19-28 ms on one core).

What it costs: at factor m an alert's debounce (N windows) spans m times more signal, and
the anomaly baseline fills m times slower. Off by default, because a burst replay is
overload by construction and would then be thinned (docs/agent.md).

>>> t = [0.0]
>>> th = Thinner(50.0, clock=lambda: t[0])
>>> th.factor, th.keep(3)
(1, True)
>>> for _ in range(20):  # a saturated core: 100 ms of work per 100 ms, half of it inference
...     t[0] += 0.1; th.work(busy_s=0.1, inference_s=0.05)
>>> round(th.busy, 2), round(th.inference, 2)
(0.98, 0.49)
>>> th.observe(90.0, arrived=1.9, most=4); th.factor  # over 0.8 x 50 ms, saturated: thin
2
>>> [k for k in range(6) if th.keep(k)]
[0, 2, 4]
>>> th.observe(300.0, arrived=1.95, most=4); th.factor  # cut before the change: no second raise
2
>>> for _ in range(20):  # 40 % busy, 20 % inference: twice the inference still fits
...     t[0] += 0.1; th.batched(8, 0.02); th.work(busy_s=0.04, inference_s=0.02)
>>> th.factor
1
>>> th.observe(90.0, arrived=t[0], most=4); th.factor  # slow, but the core is not saturated
1
>>> Thinner(0.0, clock=lambda: 0.0, start=4).factor  # budget 0: off, every window kept
1
>>> fresh = Thinner(50.0, clock=lambda: t[0])
>>> fresh.batch_limit(32)  # no batch timed yet
32
>>> fresh.batched(32, 0.024); fresh.batch_limit(32)  # 0.75 ms per window: 0.3 x 50 ms holds 20
20
>>> Thinner(0.0, clock=lambda: 0.0).batch_limit(32)  # off: the configured size
32
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["BATCH_SHARE", "BUSY", "HIGH", "HOLD_S", "MARGIN", "MIN_BATCH", "SATURATED", "TAU_S", "Thinner"]

HIGH = 0.8  # a batch's worst latency over HIGH x budget thins further (headroom for the next batch) ...
SATURATED = 0.7  # ... when the agent's busy share is at least this (at 0.7-0.8 of a core, with
# no thinning, single seconds had p99s of 65-111 ms on the small gateway: queueing behind batches)
BUSY = 0.8  # the factor halves when busy + inference share is at most this ...
MARGIN = 0.1  # ... and this far under the busy share of the last raise
HOLD_S = 1.0  # halving: calm this long, this long after the last change and the first batch since
TAU_S = 0.5  # time constant of the busy and inference shares
BATCH_SHARE = 0.3  # a batch takes at most this share of the budget ...
MIN_BATCH = 4  # ... and holds at least this many windows (per-call overhead)
COST_WEIGHT = 0.2  # weight of the newest batch in the cost per window (moving average)


class Thinner:
    """The thinning factor m of the agent's windows, driven by batch latencies and busy time."""

    def __init__(self, budget_ms: float, clock: Callable[[], float], start: int = 1) -> None:
        if budget_ms < 0 or start < 1:
            raise ValueError(f"budget_ms={budget_ms}, start={start}: use 0 (off) or a positive budget, start >= 1")
        self.budget_ms = budget_ms
        self.clock = clock
        # The agent starts at its largest factor: at start every sensor's first windows and first
        # reads come at once, and a factor of 1 let the first second's p99 reach 118 ms at 100
        # sensors before the first raise took effect. Calm halves it within a second or two.
        self.factor = start if self.enabled else 1
        self.changes = 0  # how often the factor moved (the heartbeat counts it)
        self._changed_at = self._last = clock()  # agent time of the last change, of the last work()
        self.busy = self.inference = 0.0  # shares of the core (moving averages over TAU_S)
        self._carry = (0.0, 0.0)  # work reported since the clock last moved
        self.per_window_s = 0.0  # a batch's time per window (moving average; 0 until one is timed)
        self._raised_busy = 1.0  # busy share at the last raise (the lower factor was too slow there)
        self._calm_since: float | None = None  # since when halving would fit (None: it would not)
        self._loaded_since: float | None = None  # the first batch after the last change

    @property
    def enabled(self) -> bool:
        return self.budget_ms > 0

    def keep(self, index: int) -> bool:
        """Whether a sensor's ``index``-th window is inferred at the current factor."""
        return self.factor == 1 or index % self.factor == 0

    def observe(self, latency_ms: float, arrived: float, most: int) -> None:
        """A batch's worst latency; ``arrived``: when its oldest window's frame was received;
        ``most``: the largest factor the model's window and hop allow."""
        if self.factor > most:  # a new model with a shorter window or a longer hop
            self._set(most, f"at most {most} for this model")
        if (self.enabled and latency_ms > HIGH * self.budget_ms and self.busy >= SATURATED
                and self.factor < most and arrived >= self._changed_at):
            self._raised_busy = self.busy
            self._set(min(most, 2 * self.factor), f"batch latency {latency_ms:.1f} ms, busy {self.busy:.0%}")

    def batched(self, windows: int, seconds: float) -> None:
        """A batch of ``windows`` took ``seconds``, model and alerting (the cost per window)."""
        if not self.enabled or windows <= 0:
            return
        if self._loaded_since is None:
            self._loaded_since = self.clock()
        if seconds <= 0:  # a clock that did not move (agent time in tests): no cost to learn
            return
        per = seconds / windows
        self.per_window_s = per if not self.per_window_s else (
            (1 - COST_WEIGHT) * self.per_window_s + COST_WEIGHT * per)

    def batch_limit(self, size: int) -> int:
        """The most windows one batch may hold: ``size`` (configured), or fewer with a budget."""
        if not self.enabled or not self.per_window_s:
            return size
        fits = int(BATCH_SHARE * self.budget_ms / 1000 / self.per_window_s)
        return max(min(MIN_BATCH, size), min(size, fits))

    def work(self, busy_s: float, inference_s: float) -> None:
        """One step's working time (not waiting for input) and the part of it spent inferring."""
        if not self.enabled:
            return
        now = self.clock()
        self._carry = (self._carry[0] + busy_s, self._carry[1] + inference_s)
        span = now - self._last
        if span <= 0:
            return  # no time has passed on this clock: carry the work to the next step
        keep = math.exp(-span / TAU_S)  # each share is a moving average of work / time
        self.busy = keep * self.busy + (1 - keep) * self._carry[0] / span
        self.inference = keep * self.inference + (1 - keep) * self._carry[1] / span
        self._last, self._carry = now, (0.0, 0.0)
        if self.busy + self.inference > min(BUSY, self._raised_busy - MARGIN):
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = now
        if (self.factor > 1 and self._calm_since is not None and now - self._calm_since >= HOLD_S
                and now - self._changed_at >= HOLD_S
                and self._loaded_since is not None and now - self._loaded_since >= HOLD_S):
            self._set(self.factor // 2, f"busy {self.busy:.0%}, inference {self.inference:.0%}")

    def _set(self, factor: int, why: str) -> None:
        log.debug("thinning factor %d -> %d (%s, budget %.0f ms)", self.factor, factor, why, self.budget_ms)
        self.factor, self._changed_at, self._loaded_since = factor, self.clock(), None
        self.changes += 1
