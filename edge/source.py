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


class Inbox:
    """A bounded FIFO filled by transport callbacks; counts what it had to drop."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._q: queue.Queue[Message] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.received = 0
        self.overflow = 0

    def put(self, msg: Message) -> bool:
        """Never blocks: a full inbox drops ``msg`` and counts it."""
        try:
            self._q.put_nowait(msg)
        except queue.Full:
            with self._lock:
                self.overflow += 1
            return False
        with self._lock:
            self.received += 1
        return True

    def poll(self, timeout: float) -> Message | None:
        try:
            return self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._q.qsize()


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
        """At least ``received``, ``overflow`` (dropped: inbox full) and ``depth``."""
        ...


# name -> factory(**options); filled by the adapter modules (memory, mqtt).
SOURCES: dict[str, Callable[..., Source]] = {}


def register_source(name: str, factory: Callable[..., Source]) -> None:
    SOURCES[name] = factory
