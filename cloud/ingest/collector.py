"""The evidence collector: ``edgevib/v1/+/+/evidence`` (QoS 1) -> :class:`EvidenceStore`.

A persistent MQTT 5 session with manual acks, like the bridge: paho's callback only
enqueues; one worker thread stores each message and only then acknowledges it, so a
message is either stored (or counted as rejected) or still queued at the broker.

"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.errors import CloudRetryableError
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store

from edgevib.broker import parse_url
from edgevib.extras import require

log = logging.getLogger(__name__)


class Collector:
    """``start()`` / ``stop()``; :meth:`wait_stored` blocks until N records are stored."""

    def __init__(self, cfg: CloudConfig, *, store: Store | None = None, client_id: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.mqtt = require("paho.mqtt.client", extra="cloud", feature="evidence collector")
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415 - after require()

        self.cfg, ecfg = cfg, cfg.evidence
        self.host, self.port, tls = parse_url(cfg.broker_url)
        self._own_store = store is None
        self.store = store if store is not None else Store(cfg.store_url, clock=clock)
        self.dataset = EvidenceStore(self.store, ecfg.dataset_dir, max_bytes=ecfg.max_bytes,
                                     max_per_gateway_per_min=ecfg.per_gateway_per_min, clock=clock,
                                     topic_prefix=cfg.bridge.topic_prefix)
        self.received = 0
        self._q: queue.SimpleQueue[tuple[str, bytes, int, int] | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        c = self.mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or ecfg.client_id,
                             protocol=self.mqtt.MQTTv5, manual_ack=True)
        if tls:
            c.tls_set()
        c.on_connect, c.on_subscribe, c.on_message = self._on_connect, self._on_subscribe, self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(0.2, 5)
        self.client = c

    # -- paho callbacks (network thread): enqueue only ---------------------------------------
    def _on_connect(self, client: Any, _u: object, flags: object, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("collector: connect refused: %s", reason)
            return
        client.subscribe(f"{self.cfg.bridge.topic_prefix}/+/+/evidence", qos=1)

    def _on_subscribe(self, *_a: object) -> None:
        self._ready.set()  # after SUBACK: nothing published from now on is missed

    def _on_disconnect(self, *_a: object) -> None:
        self._ready.clear()

    def _on_message(self, _c: object, _u: object, msg: Any) -> None:
        self.received += 1
        self._q.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 24 * 3600  # the broker keeps evidence for us while we are down
        try:
            self.client.connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        except OSError as exc:
            raise CloudRetryableError("cloud.collector", f"broker {self.cfg.broker_url} unreachable: {exc}",
                                      "start the broker or fix broker_url") from exc
        self._thread = threading.Thread(target=self._work, name="edgevib-collector", daemon=True)
        self._thread.start()
        self.client.loop_start()
        if not self._ready.wait(timeout):
            self.stop()
            raise CloudRetryableError("cloud.collector", f"no SUBACK from {self.cfg.broker_url} in {timeout} s",
                                      "check the broker and its ACL for .../evidence")

    def stop(self) -> None:
        """Store what was received, disconnect (the session stays at the broker)."""
        self._stopping.set()  # a failing store gives up; a working one drains the queue and acks
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(10)
            self._thread = None
        self.client.disconnect()
        self.client.loop_stop()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        while (item := self._q.get()) is not None:
            topic, payload, mid, qos = item
            delay = 0.1
            while True:  # bad input is counted inside put; what raises is the store (locked, disk full)
                try:
                    self.dataset.put(payload, topic)
                    break
                except Exception:  # noqa: BLE001 - retried: acking now would lose the window
                    log.exception("collector: cannot store evidence from %s; retrying in %.1f s", topic, delay)
                    if self._stopping.wait(delay):
                        return  # not acked: the broker redelivers it to the next session
                    delay = min(delay * 2, 10.0)
            if qos > 0:
                self.client.ack(mid, qos)
            with self._cond:
                self._cond.notify_all()

    def wait_stored(self, n: int, timeout: float) -> bool:
        """True once ``n`` records were stored by this collector (within ``timeout`` seconds)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.dataset.stored < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def run_collector(cfg: CloudConfig, stop: threading.Event) -> EvidenceStore:
    """Run until ``stop`` is set (``edgevib cloud collect``), logging counts every 10 s."""
    col = Collector(cfg)
    col.start()
    try:
        while not stop.wait(10):
            d = col.dataset
            log.info("collector: received %d stored %d evicted %d rejected %s", col.received, d.stored, d.evicted,
                     dict(d.rejected))
    finally:
        col.stop()
    return col.dataset
