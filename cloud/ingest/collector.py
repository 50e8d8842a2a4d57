"""The evidence collector: ``edgevib/v1/+/+/evidence`` (QoS 1) -> :class:`EvidenceStore`.

A persistent MQTT 5 session with manual acks, the bridge's
(:class:`edgevib.cloud.ingest.session.DurableSession`): paho's callback only enqueues; the
session's worker thread stores each message and only then acknowledges it, so a message is
either stored (or counted as rejected) or still queued at the broker.

"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.ingest.session import DurableSession, Message
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store

log = logging.getLogger(__name__)


class Collector:
    """``start()`` / ``stop()``; :meth:`wait_stored` blocks until N records are stored."""

    def __init__(self, cfg: CloudConfig, *, store: Store | None = None, client_id: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg, ecfg = cfg, cfg.evidence
        self._own_store = store is None
        self.store = store if store is not None else Store(cfg.store_url, clock=clock)
        self.dataset = EvidenceStore(self.store, ecfg.dataset_dir, max_bytes=ecfg.max_bytes,
                                     max_per_gateway_per_min=ecfg.per_gateway_per_min, clock=clock,
                                     topic_prefix=cfg.bridge.topic_prefix)
        self._cond = threading.Condition()
        # One message per batch: each is acked as soon as it is stored.
        self.session = DurableSession(
            broker_url=cfg.broker_url, client_id=client_id or ecfg.client_id,
            subscriptions=[(f"{cfg.bridge.topic_prefix}/+/+/evidence", 1)], handle=self._handle,
            component="cloud.collector", max_batch=1, ready_fix="check the broker and its ACL for .../evidence",
            clock=clock)
        self.client = self.session.client

    @property
    def received(self) -> int:
        return self.session.received

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self.session.start(timeout)

    def stop(self) -> None:
        """Store what was received, disconnect (the session stays at the broker)."""
        self.session.stop()  # a failing store gives up; a working one drains the inbox and acks
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, batch: list[Message], final: bool) -> bool:
        for m in batch:
            delay = 0.1
            while True:  # bad input is counted inside put; what raises is the store (locked, disk full)
                try:
                    self.dataset.put(m.payload, m.topic)
                    break
                except Exception:  # noqa: BLE001 - retried: acking now would lose the window
                    log.exception("collector: cannot store evidence from %s; retrying in %.1f s", m.topic, delay)
                    if self.session.wait_stopping(delay):
                        return False  # not acked: the broker redelivers it to the next session
                    delay = min(delay * 2, 10.0)
        with self._cond:
            self._cond.notify_all()
        return True

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
