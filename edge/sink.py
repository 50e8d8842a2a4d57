"""The sink contract: where the agent publishes (MQTT, memory, ...).

Delivery of QoS 1 messages is tracked by *tokens*: :meth:`Sink.publish` returns an
``int`` token when the sink has taken the message over, and the token later shows
up in :meth:`Sink.acked` once the receiver acknowledged it (MQTT PUBACK). While
the sink lives it keeps re-sending an accepted message across reconnects. ``None``
means "not taken" (offline, or the sink's queue is full): the caller keeps the
message (e.g. in the outbox) and offers it again when :attr:`Sink.connected`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> int | None:
        """Hand a message over; a token for QoS >= 1, ``0`` for QoS 0; ``None`` if not taken."""
        ...

    def acked(self) -> list[int]:
        """Tokens acknowledged since the last call, in acknowledgement order."""
        ...

