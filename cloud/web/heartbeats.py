"""Live gateway metrics for the dashboard's fleet page, straight from the heartbeats on MQTT.

The store keeps liveness, outbox and drops per gateway; throughput and latency live only
in the heartbeats, so the dashboard subscribes to them when it knows the broker.
Throughput is the change in the agent's ``windows`` counter between two heartbeats.
Every heartbeat goes through the protocol's own parser (:func:`edgevib.protocol.parse_heartbeat`),
as in the cloud's bridge: a malformed one is skipped, counted per reason in ``rejected``
(shown by ``/api/fleet`` as ``live_rejected``) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Protocol

from edgevib.edge.source import Source

from edgevib.protocol import PREFIX, parse_heartbeat, parse_topic, subscription
from edgevib.protocol.errors import ProtocolError

log = logging.getLogger(__name__)


class _Link(Source, Protocol):
    def close(self) -> None: ...


class HeartbeatWatch:
    """Subscribes to ``<prefix>/+/+/heartbeat``; :meth:`snapshot` gives the newest numbers per gateway.

    ``link`` (a :class:`~edgevib.edge.source.Source` with ``close()``) replaces the MQTT connection, e.g. in tests.
    """

    def __init__(self, broker_url: str, topic_prefix: str = PREFIX, *, link: _Link | None = None) -> None:
        if link is None:
            from edgevib.edge.mqtt import MqttLink  # noqa: PLC0415 - paho only when a broker is used

            link = MqttLink(broker_url, client_id=f"edgevib-dashboard-{int(time.time() * 1000) % 10**8}")
        self.link = link
        self.prefix = topic_prefix
        self.link.subscribe(subscription("heartbeat", prefix=topic_prefix))
        self._last: dict[str, dict[str, Any]] = {}
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-heartbeats", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            msg = self.link.poll(0.5)
            if msg is not None:
                self.receive(msg.topic, msg.payload, time.time())

    def receive(self, topic: str, payload: bytes, now_s: float) -> bool:
        """Validate one heartbeat message and take its numbers; False (counted, logged) if malformed."""
        try:
            info = parse_topic(topic, self.prefix)
            hb = parse_heartbeat(bytes(payload))
            if (hb["site"], hb["gateway"]) != (info.site, info.gateway):
                raise ProtocolError("bad_field", f"heartbeat names {hb['site']}/{hb['gateway']}",
                                    "publish on the gateway's own heartbeat topic")
        except ProtocolError as exc:
            with self._lock:
                self.rejected[exc.reason] += 1
                n = self.rejected[exc.reason]
            if n == 1 or n % 1000 == 0:  # a gateway sending garbage every second must not flood the log
                log.warning("heartbeat on %s skipped (%s, %d so far): %s", topic[:200], exc.reason, n, exc)
            return False
        self.update(hb, now_s)
        return True

    def update(self, hb: dict[str, Any], now_s: float) -> None:
        key = f"{hb['site']}/{hb['gateway']}"
        c, r = hb.get("counters") or {}, hb.get("resources") or {}
        t = int(hb["t_ns"]) / 1e9
        with self._lock:
            prev = self._last.get(key)
            rate = None
            if prev is not None and t > prev["t"] and c.get("windows") is not None and prev.get("windows") is not None:
                rate = (float(c["windows"]) - float(prev["windows"])) / (t - prev["t"])
            self._last[key] = {
                "t": t, "received_s": now_s, "windows": c.get("windows"), "frames_in": c.get("frames_in"),
                "windows_per_s": round(rate, 2) if rate is not None and rate >= 0 else None,
                "latency_p50_ms": c.get("latency_p50_ms"), "latency_p99_ms": c.get("latency_p99_ms"),
                "inference_p99_ms": c.get("inference_p99_ms"), "rss_mb": r.get("rss_mb"),
                "cpu_pct": r.get("cpu_pct"), "sensors": len(hb.get("sensors") or {}),
            }

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._last.items()}

    def rejected_counts(self) -> dict[str, int]:
        """Malformed heartbeats skipped so far, per protocol reason."""
        with self._lock:
            return dict(sorted(self.rejected.items()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.link.close()
