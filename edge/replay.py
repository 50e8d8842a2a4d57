"""Re-send what the broker acknowledged just before it went away.

Mosquitto acknowledges a QoS 1 PUBLISH before its persistence file is written (persistence is
a snapshot, not a write-ahead log), so a broker that crashes can lose alerts it acknowledged in
its last moments: tests/reliability saw one alert lost in about a dozen broker SIGKILLs. The
agent's outbox cannot help there (the row was deleted on the PUBACK), so the agent remembers
alerts acknowledged in the last ``window_s`` seconds and, when the link comes back after
being down, publishes those acknowledged within ``window_s`` before it went down again.
Receivers de-duplicate by alert id (the ids are deterministic), so a re-send costs a
duplicate, never a second alert.

>>> t = [0.0]
>>> r = AckReplay(5.0, clock=lambda: t[0])
>>> r.acked("a/alerts", b"1"); t[0] = 4.0; r.acked("a/alerts", b"2")
>>> t[0] = 8.0; r.link_state(False)         # down at t = 8: "1" was acknowledged 8 s before
[]
>>> t[0] = 20.0; r.link_state(True)          # back: re-send what was acked in [3, 8]
[('a/alerts', b'2')]
>>> r.link_state(True)                       # once per outage
[]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class AckReplay:
    """Bounded memory of recently acknowledged alerts; see the module docstring."""

    def __init__(self, window_s: float, clock: Callable[[], float], maxlen: int = 1000) -> None:
        self.window_s, self.clock = window_s, clock
        self._recent: deque[tuple[float, str, bytes]] = deque(maxlen=maxlen)
        self._down_at: float | None = None

    def acked(self, topic: str, payload: bytes) -> None:
        if self.window_s > 0:
            now = self.clock()
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()
            self._recent.append((now, topic, payload))

    def link_state(self, connected: bool) -> list[tuple[str, bytes]]:
        """Call with the link's state each step; returns the alerts to publish again (once per outage)."""
        if not connected:
            if self._down_at is None:
                self._down_at = self.clock()
            return []
        if self._down_at is None:
            return []
        since, self._down_at = self._down_at - self.window_s, None
        out = [(topic, payload) for t, topic, payload in self._recent if t >= since]
        self._recent.clear()
        return out
