"""The source contract: where the agent's messages come from (MQTT, memory, ...).

A source hands over plain :class:`Message` objects, never a transport's own types.
Transports push messages from their callbacks into an :class:`Inbox` (a bounded
queue); the agent's own thread takes them out with :meth:`Source.poll`, so a slow
agent drops (and counts) messages instead of blocking the network thread.

>>> box = Inbox(maxsize=1)
>>> box.put(Message("a/raw", b"1", 0.0)), box.put(Message("a/raw", b"2", 0.0))
(True, False)
>>> box.overflow, box.poll(0).payload
(1, b'1')
>>> box = Inbox(max_bytes=1000, max_message=100)
>>> box.put(Message("a/raw", bytes(101), 0.0)), box.put(Message("a/raw", bytes(100), 0.0))
(False, True)
>>> box.put(Message("a/raw", bytes(100), 0.0)), box.put(Message("a/raw", bytes(100), 0.0))
(True, False)
>>> box.too_large, box.overflow_bytes, box.bytes
(1, 1, 722)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Message:
    """One received message: ``t`` is the receive time on the source's clock (seconds)."""

    topic: str
    payload: bytes
    t: float


# What one queued message costs beyond its payload and topic: the Message and bytes
# objects, the topic string's header and the queue's slot (CPython 3.11, 64-bit, rounded up).
MESSAGE_OVERHEAD = 256

# topic, payload -> the largest payload accepted on that topic (bytes)
SizeLimit = Callable[[str, bytes], int]


class Inbox:
    """A bounded FIFO filled by transport callbacks; counts what it had to drop, by reason.

    Bounded by message count (``maxsize``) and by bytes (``max_bytes``: payload + topic
    + :data:`MESSAGE_OVERHEAD` per message), so a flood of large messages cannot take
    more memory than ``max_bytes``. ``max_message`` (bytes, or a function of topic and
    payload) refuses a single message before it is queued. Counters: ``received``
    (queued), ``overflow`` (count full), ``overflow_bytes`` (byte budget full),
    ``too_large`` (over ``max_message``).
    """

    def __init__(self, maxsize: int = 10_000, *, max_bytes: int | None = None,
                 max_message: int | SizeLimit | None = None) -> None:
        self._q: queue.Queue[tuple[Message, int]] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self._limit = max_message
        self.bytes = 0  # queued now, as charged against max_bytes
        self.received = 0
        self.overflow = 0
        self.overflow_bytes = 0
        self.too_large = 0

    def put(self, msg: Message) -> bool:
        """Never blocks: a message over the size limit or the budget is dropped and counted."""
        limit = self._limit(msg.topic, msg.payload) if callable(self._limit) else self._limit
        if limit is not None and len(msg.payload) > limit:
            with self._lock:
                self.too_large += 1
            return False
        cost = len(msg.payload) + len(msg.topic) + MESSAGE_OVERHEAD
        with self._lock:  # reserve first: two callbacks must not both fit in the last bytes
            if self.max_bytes is not None and self.bytes + cost > self.max_bytes:
                self.overflow_bytes += 1
                return False
            self.bytes += cost
        try:
            self._q.put_nowait((msg, cost))
        except queue.Full:
            with self._lock:
                self.bytes -= cost
                self.overflow += 1
            return False
        with self._lock:
            self.received += 1
        return True

    def poll(self, timeout: float) -> Message | None:
        try:
            msg, cost = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self.bytes -= cost
        return msg

    def depth(self) -> int:
        return self._q.qsize()

    def stats(self) -> dict[str, int]:
        """The counters every source reports (see :meth:`Source.stats`)."""
        with self._lock:
            return {"received": self.received, "overflow": self.overflow, "overflow_bytes": self.overflow_bytes,
                    "too_large": self.too_large, "depth": self._q.qsize(), "bytes": self.bytes}


@runtime_checkable
class Source(Protocol):
    """Delivers messages on subscribed topic filters (MQTT wildcards ``+`` and ``#``).

    Subscriptions survive reconnects: the source restores them itself.
    """

    def subscribe(self, topic_filter: str, qos: int = 0) -> None: ...

    def poll(self, timeout: float) -> Message | None:
        """The next message, or ``None`` after ``timeout`` seconds (0 = do not wait)."""
        ...

    def stats(self) -> dict[str, int]:
        """At least ``received``, ``overflow`` (dropped: inbox full) and ``depth``; an
        :class:`Inbox`-based source adds ``overflow_bytes`` (byte budget full), ``too_large``
        (one message over the size limit) and ``bytes`` (queued now)."""
        ...


# name -> factory(**options); filled by the adapter modules (memory, mqtt).
SOURCES: dict[str, Callable[..., Source]] = {}


def register_source(name: str, factory: Callable[..., Source]) -> None:
    SOURCES[name] = factory
