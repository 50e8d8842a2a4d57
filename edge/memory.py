"""In-memory source/sink: a tiny broker in one process, for fast tests and demos.

It follows the same contract as the MQTT adapter: bounded inboxes, topic wildcards,
retained messages, QoS 1 tokens acknowledged (or held, to test the outbox), links
that go offline and come back, and a last-will sent when a link dies uncleanly.

>>> bus = MemoryBus()
>>> a, b = MemoryLink(bus, "a"), MemoryLink(bus, "b")
>>> b.subscribe("s/+/raw")
>>> a.publish("s/x/raw", b"hi", qos=1)
1
>>> b.poll(0).payload, a.acked()
(b'hi', [1])
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from edgevib.edge.source import Inbox, Message, SizeLimit
from paho.mqtt.client import topic_matches_sub


class MemoryBus:
    """The shared medium. ``auto_ack=False`` holds QoS 1 acknowledgements until :meth:`ack_all`."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.retained: dict[str, bytes] = {}
        self.links: list[MemoryLink] = []
        self.lock = threading.RLock()
        self._held: list[tuple[MemoryLink, int]] = []

    def deliver(self, topic: str, payload: bytes, retain: bool) -> None:
        with self.lock:
            if retain:
                self.retained[topic] = payload
            for link in self.links:
                if link.connected and any(topic_matches_sub(f, topic) for f in link.filters):
                    link.inbox.put(Message(topic, payload, link.clock()))

    def hold_or_ack(self, link: MemoryLink, token: int) -> None:
        with self.lock:
            if self.auto_ack:
                link.ack(token)
            else:
                self._held.append((link, token))

    def ack_all(self) -> None:
        """Acknowledge every held QoS 1 message whose link is still connected."""
        with self.lock:
            held, self._held = self._held, []
            for link, token in held:
                if link.connected:
                    link.ack(token)

    def disconnect_all(self) -> None:
        """Simulate a broker outage: every link goes offline (no wills: the broker died)."""
        with self.lock:
            for link in self.links:
                link.connected = False
            self._held.clear()


class MemoryLink:
    """One client of a :class:`MemoryBus`: both a :class:`Source` and a :class:`Sink`.

    ``status`` is ``(topic, online, offline)``: birth published retained on connect,
    ``offline`` as last-will (:meth:`die`) or on :meth:`close`.
    """

    def __init__(self, bus: MemoryBus, client_id: str = "", *, inbox_size: int = 10_000,
                 inbox_bytes: int | None = None, max_message: int | SizeLimit | None = None,
                 status: tuple[str, bytes, bytes] | None = None,
                 clock: Callable[[], float] = time.monotonic, connect: bool = True) -> None:
        self.bus, self.client_id, self.status, self.clock = bus, client_id, status, clock
        self.inbox = Inbox(inbox_size, max_bytes=inbox_bytes, max_message=max_message)
        self.filters: list[str] = []
        self.connected = False
        self._tokens = itertools.count(1)
        self._unacked: dict[int, tuple[str, bytes, bool]] = {}
        self._acked: list[int] = []
        self._lock = threading.Lock()
        with bus.lock:
            bus.links.append(self)
        if connect:
            self.reconnect()

    def start(self) -> None:
        """Come online (a link made with ``connect=False``); the same as :meth:`reconnect`."""
        self.reconnect()

    def reconnect(self) -> None:
        """Come (back) online: restore subscriptions, publish birth, re-send unacknowledged."""
        with self.bus.lock:
            self.connected = True
            for f in self.filters:
                self._send_retained(f)
            if self.status:
                self.bus.deliver(self.status[0], self.status[1], True)
            with self._lock:
                pending = sorted(self._unacked.items())
            for token, (topic, payload, retain) in pending:
                self.bus.deliver(topic, payload, retain)
                self.bus.hold_or_ack(self, token)

    def _send_retained(self, f: str) -> None:
        for topic, payload in self.bus.retained.items():
            if topic_matches_sub(f, topic):
                self.inbox.put(Message(topic, payload, self.clock()))

    def subscribe(self, topic_filter: str, qos: int = 0) -> None:  # the bus loses nothing: qos unused
        with self.bus.lock:
            self.filters.append(topic_filter)
            if self.connected:
                self._send_retained(topic_filter)

    def poll(self, timeout: float) -> Message | None:
        return self.inbox.poll(timeout)

    def stats(self) -> dict[str, int]:
        return self.inbox.stats()

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> int | None:
        with self.bus.lock:
            if not self.connected:
                return None
            self.bus.deliver(topic, bytes(payload), retain)
            if qos == 0:
                return 0
            token = next(self._tokens)
            with self._lock:
                self._unacked[token] = (topic, bytes(payload), retain)
            self.bus.hold_or_ack(self, token)
            return token

    def ack(self, token: int) -> None:
        with self._lock:
            if self._unacked.pop(token, None) is not None:
                self._acked.append(token)

    def acked(self) -> list[int]:
        with self._lock:
            out, self._acked = self._acked, []
        return out

    def die(self) -> None:
        """Unclean end (process killed): the bus publishes the last-will."""
        with self.bus.lock:
            self.connected = False
            self.bus.links.remove(self)
            if self.status:
                self.bus.deliver(self.status[0], self.status[2], True)

    def close(self) -> None:
        with self.bus.lock:
            if self.connected and self.status:
                self.bus.deliver(self.status[0], self.status[2], True)
            self.connected = False
            if self in self.bus.links:
                self.bus.links.remove(self)

