"""One durable MQTT 5 session with manual acks: what the bridge and the evidence collector share.

:class:`DurableSession` connects with ``clean_start=False`` and a long session expiry (the
broker queues QoS 1 messages while we are away), subscribes on every connect, and is
*ready* only after SUBACK (on a new session, messages published between CONNACK and SUBACK
would otherwise never reach us). paho's network thread only appends each message to an
inbox; one worker thread hands batches (at most ``max_batch`` messages, collected for up
to ``flush_s`` after the first) to ``handle(batch, final)``. The batch's QoS > 0 messages
are acknowledged only when ``handle`` returns True: a message is either done (on disk,
stored, or counted as rejected) or still unacknowledged at the broker. If ``handle``
raises, the connection is dropped so the broker redelivers what was not acknowledged.

With ``fair_key`` (the bridge: the gateway of a topic) the inbox is one queue per key and
a batch is shared out between them, smallest queue first, so one gateway's flood does not
delay the other gateways' messages by more than one batch (issue 19). Each key's messages
keep their order; acks across keys may go out of arrival order (Mosquitto matches them by
packet id).

``handle`` is also called with an empty batch every ``flush_s`` (housekeeping: the
bridge's dead-letter summaries and spool cleanup) and once with ``final=True`` on
:meth:`stop`, after the inbox is drained.

Shared subscriptions (``$share/<group>/<filter>``, :func:`shared`): several processes
with the same group split the messages; each must have its own ``client_id``. Mosquitto
(2.0) keeps a member's unacknowledged *and* its share of new messages in that member's
session while it is down and hands them over when the same ``client_id`` reconnects; a
member whose session expires loses them. So a shared member must come back under its own
id (a supervisor's restart, a StatefulSet), see docs/scale.md.

>>> shared("edgevib/v1/+/+/alerts", "bridges")
'$share/bridges/edgevib/v1/+/+/alerts'
>>> shared("edgevib/v1/+/+/alerts", "")
'edgevib/v1/+/+/alerts'
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from edgevib.cloud.errors import CloudError, CloudRetryableError
from edgevib.cloud.ingest.fastmqtt import make_client

from edgevib.broker import parse_url
from edgevib.extras import require

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue for a week


def shared(topic_filter: str, group: str) -> str:
    """``topic_filter`` as an MQTT 5 shared subscription of ``group`` (unchanged if ``group`` is empty)."""
    if not group:
        return topic_filter
    if any(c in group for c in "/+#"):
        raise CloudError("cloud.session", f"share group {group!r}", "use a name without '/', '+' or '#'")
    return f"$share/{group}/{topic_filter}"


class Message(NamedTuple):
    """One received message as the worker sees it (``recv_ms``: wall clock at arrival)."""

    topic: str
    payload: bytes
    recv_ms: int
    mid: int
    qos: int


Handler = Callable[[list[Message], bool], bool]


class DurableSession:
    """``start()`` / ``stop()``; ``handle(batch, final) -> ack?`` runs in the worker thread."""

    def __init__(self, *, broker_url: str, client_id: str, subscriptions: Sequence[tuple[str, int]],
                 handle: Handler, component: str, max_batch: int = 1, flush_s: float = 0.0,
                 receive_maximum: int | None = None, session_expiry_s: int = SESSION_EXPIRY_S,
                 on_connect: Callable[[bool], None] | None = None, ready_fix: str = "check the broker",
                 fair_key: Callable[[str], str] | None = None, clock: Callable[[], float] = time.time) -> None:
        mqtt = require("paho.mqtt.client", extra="cloud", feature=component)
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415 - after require()

        if max_batch < 1:
            raise CloudError(component, f"max_batch={max_batch}", "use at least 1")
        self.broker_url, self.component = broker_url, component
        self.host, self.port, tls = parse_url(broker_url)
        self.subscriptions = list(subscriptions)
        self.handle, self.max_batch, self.flush_s = handle, max_batch, flush_s
        self.receive_maximum, self.session_expiry_s = receive_maximum, session_expiry_s
        self.clock, self._on_connect_hook, self.ready_fix = clock, on_connect, ready_fix
        self.received = 0
        self.connects = 0
        # The inbox: one FIFO per fair_key(topic) (one in all without fair_key); dict order
        # is arrival order of each key's oldest pending message.
        self.fair_key = fair_key
        self._queues: dict[str, list[Message]] = {}
        self._npending = 0
        self._first_ms = 0  # arrival of the oldest message of the batch being filled
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        # The cheaper receive path (fastmqtt): under a flood, what the bridge cannot read yet
        # waits at the broker, ahead of the other gateways' alerts (issue 19).
        c = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        if tls:
            c.tls_set()
        c.on_connect, c.on_subscribe, c.on_message = self._on_connect, self._on_subscribe, self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(0.2, 5)
        self.client: Any = c

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s (a handler's retry pause); True as soon as :meth:`stop` was called."""
        return self._stop.wait(timeout)

    # -- paho callbacks (network thread): enqueue only ----------------------------------------
    def _on_connect(self, client: Any, _u: object, flags: object, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("%s: connect refused: %s", self.component, reason)
            return
        self.connects += 1
        client.subscribe(self.subscriptions)
        present = bool(getattr(flags, "session_present", False))
        log.info("%s: connected to %s:%d (session present: %s)", self.component, self.host, self.port, present)
        if self._on_connect_hook is not None:
            self._on_connect_hook(present)

    def _on_subscribe(self, *_a: object) -> None:
        self._ready.set()

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        self._ready.clear()
        if not self._stop.is_set():
            log.warning("%s: disconnected (%s); paho reconnects", self.component, reason)

    def _on_message(self, _c: object, _u: object, msg: Any) -> None:
        m = Message(msg.topic, bytes(msg.payload), int(self.clock() * 1000), msg.mid, msg.qos)
        key = self.fair_key(m.topic) if self.fair_key is not None else ""
        with self._cond:
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = []
            q.append(m)
            if not self._npending:
                self._first_ms = m.recv_ms
            self._npending += 1
            self.received += 1
            if self._npending >= self.max_batch or self.flush_s <= 0:
                self._cond.notify()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect (persistent session), start the network and worker threads, wait for SUBACK."""
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum  # unacked messages in flight to us while a batch is handled
        try:
            self.client.connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        except OSError as exc:
            raise CloudRetryableError(self.component, f"broker {self.broker_url} unreachable: {exc}",
                                      "start the broker or fix broker_url") from exc
        self._thread = threading.Thread(target=self._work, name=f"edgevib-{self.component}", daemon=True)
        self._thread.start()
        self.client.loop_start()
        if not self._ready.wait(timeout):
            self.stop()
            raise CloudRetryableError(self.component, f"no CONNACK/SUBACK from {self.broker_url} in {timeout} s",
                                      self.ready_fix)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Handle what is pending (then ``handle([], final=True)``), disconnect; the session stays at the broker."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.client.disconnect()
        self.client.loop_stop()

    def _take(self) -> list[Message]:
        with self._cond:
            if not self._npending and not self._stop.is_set():
                self._cond.wait(self.flush_s if self.flush_s > 0 else None)
            if 0 < self._npending < self.max_batch and not self._stop.is_set() and self.flush_s > 0:
                # Let a batch fill for up to flush_s after its first message.
                self._cond.wait(max(0.0, self.flush_s - (self.clock() - self._first_ms / 1000)))
            batch = self._fair_share()
            self._npending -= len(batch)
            if self._npending:
                self._first_ms = min(q[0].recv_ms for q in self._queues.values())
            return batch

    def _fair_share(self) -> list[Message]:
        """Up to ``max_batch`` messages, shared out between keys (water-filling, smallest queue first).

        A key with a long queue (one gateway flooding) gets what the others leave, so their
        messages never wait behind its backlog for more than one batch.
        """
        if len(self._queues) == 1:  # the common case: no contention (or no fair_key)
            key, q = next(iter(self._queues.items()))
            first = q[:self.max_batch]
            del q[:self.max_batch]
            if not q:
                del self._queues[key]
            return first
        batch: list[Message] = []
        room = self.max_batch
        order = sorted(self._queues.items(), key=lambda kv: len(kv[1]))
        for i, (key, q) in enumerate(order):
            if room <= 0:
                break
            n = min(len(q), room, max(1, room // (len(order) - i)))
            batch += q[:n]
            del q[:n]
            room -= n
            if not q:
                del self._queues[key]
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            final = self._stop.is_set() and not self._npending
            try:
                ack = self.handle(batch, final)
            except Exception:  # noqa: BLE001 - nothing acked: the broker redelivers after a reconnect
                log.exception("%s: cannot handle a batch of %d; dropping the connection so the broker redelivers",
                              self.component, len(batch))
                if not self._stop.is_set():
                    # What is still in the inbox stays there (its acks may be for the new
                    # connection); what the broker resends besides is deduplicated by id downstream.
                    self.client.disconnect()
                    self.client.reconnect()
                    continue
                return
            if ack:
                for m in batch:
                    if m.qos > 0:
                        self.client.ack(m.mid, m.qos)
            if final:
                return
