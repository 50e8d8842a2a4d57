"""Live gateway metrics for the dashboard's fleet page, straight from the heartbeats on MQTT.

The store keeps liveness, outbox and drops per gateway; throughput and latency live only
in the heartbeats, so the dashboard subscribes to them when it knows the broker.
Throughput is the change in the agent's ``windows`` counter between two heartbeats.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from edgevib.edge.mqtt import MqttLink

log = logging.getLogger(__name__)


class HeartbeatWatch:
    """Subscribes to ``edgevib/v1/+/+/heartbeat``; :meth:`snapshot` gives the newest numbers per gateway."""

    def __init__(self, broker_url: str, topic_prefix: str = "edgevib/v1") -> None:
        self.link = MqttLink(broker_url, client_id=f"edgevib-dashboard-{int(time.time() * 1000) % 10**8}")
        self.link.subscribe(f"{topic_prefix}/+/+/heartbeat")
        self._last: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-heartbeats", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            msg = self.link.poll(0.5)
            if msg is None:
                continue
            try:
                self.update(json.loads(msg.payload), time.time())
            except (ValueError, KeyError, TypeError) as exc:
                log.debug("heartbeat ignored: %s", exc)

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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.link.close()
