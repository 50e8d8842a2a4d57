"""Which model input windows the agent uploads as evidence, bounded on the edge side.

Three kinds (``EvidenceUploadConfig``, the agent's ``[evidence]`` table):

* ``alert``: on every raised alert, ``alert_windows`` windows of the sensor (the recent ones
  from a small per-sensor ring of (window, probs), then the ones that follow if the ring
  held fewer), tagged with the alert's id;
* ``low_confidence``: a window whose top probability is under ``low_confidence``;
* ``healthy_sample``: about 1 in ``healthy_every`` windows predicted ``normal`` (seeded draw).

Each kind has its own token bucket (``per_minute``, burst of at least ``alert_windows``),
and nothing is queued once the outbox holds ``max_outbox_bytes``. Evidence goes into the
outbox at PRIORITY_DATA, so alerts evict it and it never evicts an alert; it is published
at QoS 1 on ``topics.evidence``. A window already sent for an alert is not sent again; a
window sent as low-confidence/healthy is re-sent when an alert claims it (same id: the
cloud's row gains the alert id).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from edgevib.edge.config import EvidenceUploadConfig
from edgevib.edge.errors import EdgeError, OutboxError, OutboxFullError
from edgevib.edge.model import Model, describe
from edgevib.edge.outbox import PRIORITY_DATA, Outbox

from edgevib.protocol import Topics
from edgevib.protocol.errors import FrameError
from edgevib.protocol.evidence import EvidenceRecord, encode

if TYPE_CHECKING:  # the cloud imports TokenBucket without the edge's psutil
    from edgevib.edge.metrics import Metrics
    from edgevib.models.bearing import BearingGeometry

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
DROP_REASONS: tuple[str, ...] = ("rate_limited", "outbox_cap", "outbox_full", "outbox_error", "invalid")


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.t = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Seen:
    """A window as inferred; a record is built only if it is sent (most never are)."""

    sensor: str
    t_ns: int
    x: F32 = field(repr=False)
    probs: F32 = field(repr=False)
    rpm: float | None
    model: Model
    sent: str | None = None  # the reason it went out with
    geometry: BearingGeometry | None = None  # the sensor's bearing: the cloud computes order features from it


@dataclass
class EvidenceSampler:
    """Feed every inferred window to :meth:`observe` and every raised alert to :meth:`on_alert`."""

    cfg: EvidenceUploadConfig
    topics: Topics
    outbox: Outbox
    model: Callable[[], Model]  # the model running now (it may be swapped)
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.monotonic
    seed: int = 0
    sent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        burst = max(self.cfg.per_minute, float(self.cfg.alert_windows), 1.0)
        self._buckets = {k: TokenBucket(self.cfg.per_minute / 60, burst, self.clock)
                         for k in ("alert", "low_confidence", "healthy_sample")}
        self._rings: dict[str, deque[_Seen]] = {}
        # sensor -> (alert id, windows still to send): an alert raised after a few windows
        # gets the rest of its ``alert_windows`` from the windows that follow it.
        self._follow: dict[str, tuple[str, int]] = {}
        self._rng = random.Random(self.seed)

    def observe(self, sensor: str, t_ns: int, x: F32, probs: F32, rpm: float | None,
                geometry: BearingGeometry | None = None) -> None:
        """Remember the window; upload it now if it is low-confidence or a healthy sample."""
        m = self.model()
        seen = _Seen(sensor, t_ns, x, probs, rpm, m, geometry=geometry)
        ring = self._rings.setdefault(sensor, deque(maxlen=max(1, self.cfg.alert_windows)))
        ring.append(seen)
        follow = self._follow.get(sensor)
        if follow is not None:
            left = follow[1] - self._send(seen, "alert", follow[0])
            if left > 0:
                self._follow[sensor] = (follow[0], left)
            else:
                del self._follow[sensor]
            return
        top = int(np.argmax(probs))
        if float(probs[top]) < self.cfg.low_confidence:
            self._send(seen, "low_confidence", None)
        elif m.meta.classes[top] == "normal" and self._rng.random() < 1.0 / self.cfg.healthy_every:
            self._send(seen, "healthy_sample", None)

    def on_alert(self, sensor: str, alert_id: str) -> int:
        """Upload up to ``alert_windows`` windows for alert ``alert_id``: the sensor's recent ones now,
        the rest from the windows that follow; returns how many went out now."""
        ring = self._rings.get(sensor, ())
        recent = list(ring)[-self.cfg.alert_windows:] if self.cfg.alert_windows else []
        n = sum(self._send(s, "alert", alert_id) for s in recent if s.sent != "alert")
        if self.cfg.alert_windows - len(recent) > 0:
            self._follow[sensor] = (alert_id, self.cfg.alert_windows - len(recent))
        return n

    def _send(self, seen: _Seen, reason: str, alert_id: str | None) -> bool:
        if not self._buckets[reason].take():
            self._drop("rate_limited")
            return False
        m = seen.model
        try:
            payload = encode(EvidenceRecord.build(
                site=self.topics.site, gateway=self.topics.gateway, sensor=seen.sensor, t_ns=seen.t_ns,
                rpm=seen.rpm, sample_rate=m.meta.sample_rate, reason=reason, alert_id=alert_id,
                model=describe(m), probs=dict(zip(m.meta.classes, (float(v) for v in seen.probs), strict=True)),
                window=seen.x, bearing=seen.geometry))
        except (FrameError, ValueError) as exc:  # e.g. a window longer than a record may carry
            self._drop("invalid", exc)
            return False
        if self.outbox.size_bytes + len(payload) > self.cfg.max_outbox_bytes:
            self._drop("outbox_cap")
            return False
        try:
            self.outbox.put(self.topics.evidence, payload, qos=1, priority=PRIORITY_DATA)
        except OutboxFullError:
            self._drop("outbox_full")
            return False
        except OutboxError as exc:  # e.g. the disk is full: evidence is dropped, the agent runs on
            self._drop("outbox_error", exc)
            return False
        seen.sent = reason
        self.sent += 1
        if self.metrics is not None:
            self.metrics.inc("evidence_sent")
        return True

    def _drop(self, reason: str, exc: EdgeError | FrameError | ValueError | None = None) -> None:
        self.dropped[reason] += 1
        if self.metrics is not None:
            self.metrics.inc("evidence_dropped")
            self.metrics.inc(f"evidence_dropped_{reason}")
        if exc is not None and self.dropped[reason] <= 3:
            log.warning("evidence not sent (%s): %s", reason, exc)
