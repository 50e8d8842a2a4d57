"""Errors of ``edgevib.edge``: each names the component, the bad value and the fix.

Errors about untrusted input carry a ``reason`` code from a small fixed set, so the
agent can count drops per reason without unbounded label cardinality.

>>> e = FrameError("bad_crc", "crc 0x1 != 0x2", "resend the frame")
>>> e.reason, str(e)
('bad_crc', 'edge.frames: crc 0x1 != 0x2; fix: resend the frame')
"""

from __future__ import annotations

from edgevib.errors import FatalError, RetryableError

FRAME_REASONS: tuple[str, ...] = (
    "truncated", "bad_length", "bad_magic", "bad_version", "bad_dtype", "bad_crc",
    "oversized", "bad_json", "bad_value",
)
PROTOCOL_REASONS: tuple[str, ...] = (
    "bad_topic", "bad_name", "oversized", "bad_json", "bad_schema", "missing_field", "bad_field",
)


class EdgeError(FatalError):
    """Base class of the edge package's fatal errors."""


class EdgeRetryableError(RetryableError):
    """An edge operation that may succeed later (broker away, disk busy)."""


class _ReasonError(EdgeError):
    reasons: tuple[str, ...] = ()
    default_component = "edge"

    def __init__(self, reason: str, problem: str, fix: str = "", component: str | None = None) -> None:
        if reason not in self.reasons:
            raise ValueError(f"unknown reason {reason!r}; use one of {self.reasons}")
        self.reason = reason
        super().__init__(component or self.default_component, problem, fix)


class FrameError(_ReasonError):
    """A vibration frame could not be decoded; ``reason`` is one of :data:`FRAME_REASONS`."""

    reasons = FRAME_REASONS
    default_component = "edge.frames"


class ProtocolError(_ReasonError):
    """A topic, alert or heartbeat breaks the protocol; ``reason`` is in :data:`PROTOCOL_REASONS`."""

    reasons = PROTOCOL_REASONS
    default_component = "edge.protocol"


class WindowingError(EdgeError):
    """Bad windowing parameters (window, hop, sample rates)."""


class ModelError(EdgeError):
    """A model file or a model's input/output breaks the model contract."""


class OutboxError(EdgeError):
    """The persistent outbox cannot store or find a record."""


class OutboxFullError(OutboxError):
    """The outbox is at its bound and holds only records at least as important as the new one."""


class BrokerUnavailable(EdgeRetryableError):
    """The MQTT broker cannot be reached right now."""
