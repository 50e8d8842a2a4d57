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

import threading
from collections import deque
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
    """A bounded, per-topic fair queue filled by transport callbacks; counts what it dropped.

    Bounded by message count (``maxsize``) and by bytes (``max_bytes``: payload + topic
    + :data:`MESSAGE_OVERHEAD` per message), so a flood of large messages cannot take
    more memory than ``max_bytes``. ``max_message`` (bytes, or a function of topic and
    payload) refuses a single message before it is queued. Counters: ``received``
    (queued and not pushed out), ``overflow`` (count full), ``overflow_bytes`` (byte budget
    full), ``too_large`` (over ``max_message``); ``evicted`` is the part of the two overflow
    counters that was queued first and then pushed out. So every message a transport handed
    over is ``received + overflow + overflow_bytes + too_large``.

    Fair to topics (one topic per sensor), so a flooding or bursting publisher delays and
    drops only its own messages:

    * :meth:`poll` takes one message per topic in turn (round robin over the topics with
      messages queued), so a sensor's frame waits behind at most one message of each other
      topic, not behind a flood's whole backlog;
    * when the inbox is full, a message of a topic with a shorter backlog (in bytes) pushes
      out the oldest messages of the longest backlog; a message of the longest backlog itself
      is dropped. One topic alone may still use the whole budget (a replay at full speed).

    >>> box = Inbox(maxsize=3)
    >>> for i in range(3):
    ...     _ = box.put(Message("flood/raw", bytes([i]), 0.0))
    >>> box.put(Message("good/raw", b"g", 0.0)), box.evicted, box.overflow, box.received
    (True, 1, 1, 3)
    >>> [box.poll(0).topic for _ in range(3)]
    ['flood/raw', 'good/raw', 'flood/raw']
    """

    def __init__(self, maxsize: int = 10_000, *, max_bytes: int | None = None,
                 max_message: int | SizeLimit | None = None) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._limit = max_message
        self._queues: dict[str, deque[tuple[Message, int]]] = {}
        self._bytes_of: dict[str, int] = {}
        self._turn: deque[str] = deque()  # topics with messages queued, in poll order
        self._cond = threading.Condition(threading.Lock())
        self._count = 0
        self.bytes = 0  # queued now, as charged against max_bytes
        self.received = 0
        self.overflow = 0
        self.overflow_bytes = 0
        self.too_large = 0
        self.evicted = 0

    def _full(self, cost: int) -> str | None:
        """Why one more message of ``cost`` bytes does not fit (None: it fits)."""
        if self._count >= self.maxsize:
            return "count"
        if self.max_bytes is not None and self.bytes + cost > self.max_bytes:
            return "bytes"
        return None

    def _evict_oldest(self, topic: str, why: str) -> None:
        """Push out ``topic``'s oldest message; it counts as a drop of the full inbox, not as received."""
        q = self._queues[topic]
        _, cost = q.popleft()
        self._bytes_of[topic] -= cost
        self.bytes -= cost
        self._count -= 1
        self.received -= 1
        self.evicted += 1
        if why == "count":
            self.overflow += 1
        else:
            self.overflow_bytes += 1
        if not q:
            del self._queues[topic], self._bytes_of[topic]
            self._turn.remove(topic)

    def put(self, msg: Message) -> bool:
        """Never blocks: a message over the size limit or the budget is dropped and counted."""
        limit = self._limit(msg.topic, msg.payload) if callable(self._limit) else self._limit
        if limit is not None and len(msg.payload) > limit:
            with self._cond:
                self.too_large += 1
            return False
        cost = len(msg.payload) + len(msg.topic) + MESSAGE_OVERHEAD
        with self._cond:
            why = self._full(cost)
            if why is not None:
                mine = self._bytes_of.get(msg.topic, 0) + cost
                # the longest backlog pays; max() is over topics with a backlog (few but the flooding)
                big = max(self._bytes_of, key=self._bytes_of.__getitem__, default=None)
                if big is None or big == msg.topic or self._bytes_of[big] <= mine:
                    if why == "count":
                        self.overflow += 1
                    else:
                        self.overflow_bytes += 1
                    return False
                while (full := self._full(cost)) is not None and big in self._queues:
                    self._evict_oldest(big, full)
                if self._full(cost) is not None:  # even a whole backlog was not enough room
                    self.overflow_bytes += 1
                    return False
            q = self._queues.get(msg.topic)
            if q is None:
                q = self._queues[msg.topic] = deque()
                self._bytes_of[msg.topic] = 0
                self._turn.append(msg.topic)
            q.append((msg, cost))
            self._bytes_of[msg.topic] += cost
            self.bytes += cost
            self._count += 1
            self.received += 1
            self._cond.notify()
        return True

    def poll(self, timeout: float) -> Message | None:
        """The next message in turn, waiting up to ``timeout`` s; None if none came."""
        with self._cond:
            if not self._count and timeout > 0:
                self._cond.wait_for(lambda: self._count > 0, timeout)
            if not self._count:
                return None
            topic = self._turn.popleft()
            q = self._queues[topic]
            msg, cost = q.popleft()
            self._bytes_of[topic] -= cost
            if q:
                self._turn.append(topic)
            else:
                del self._queues[topic], self._bytes_of[topic]
            self.bytes -= cost
            self._count -= 1
            return msg

    def depth(self) -> int:
        return self._count

    def stats(self) -> dict[str, int]:
        """The counters every source reports (see :meth:`Source.stats`)."""
        with self._cond:
            return {"received": self.received, "overflow": self.overflow, "overflow_bytes": self.overflow_bytes,
                    "too_large": self.too_large, "evicted": self.evicted, "depth": self._count, "bytes": self.bytes}


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

