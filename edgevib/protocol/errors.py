"""Errors of the wire protocol: each names the component, the bad value and the fix.

Errors about untrusted input carry a ``reason`` code from a small fixed set, so a receiver
(the agent, the cloud bridge) can count drops per reason without unbounded label cardinality.
All derive from :class:`WireError`, a :class:`~edgevib.errors.FatalError`: resending the same
bytes cannot help.

>>> e = FrameError("bad_crc", "crc 0x1 != 0x2", "resend the frame")
>>> e.reason, str(e)
('bad_crc', 'protocol.frames: crc 0x1 != 0x2; fix: resend the frame')
>>> isinstance(e, WireError)
True
"""

from __future__ import annotations

from edgevib.errors import FatalError

__all__ = ["FRAME_REASONS", "PROTOCOL_REASONS", "FrameError", "ProtocolError", "WireError"]

FRAME_REASONS: tuple[str, ...] = (
    "truncated", "bad_length", "bad_magic", "bad_version", "bad_dtype", "bad_crc",
    "oversized", "bad_json", "bad_value",
)
PROTOCOL_REASONS: tuple[str, ...] = (
    "bad_topic", "bad_name", "oversized", "bad_json", "bad_schema", "missing_field", "bad_field",
)


class WireError(FatalError):
    """Base class of the protocol's errors: bytes or fields that break a wire format."""


class _ReasonError(WireError):
    reasons: tuple[str, ...] = ()
    default_component = "protocol"

    def __init__(self, reason: str, problem: str, fix: str = "", component: str | None = None) -> None:
        if reason not in self.reasons:
            raise ValueError(f"unknown reason {reason!r}; use one of {self.reasons}")
        self.reason = reason
        super().__init__(component or self.default_component, problem, fix)


class FrameError(_ReasonError):
    """A vibration frame could not be decoded; ``reason`` is one of :data:`FRAME_REASONS`."""

    reasons = FRAME_REASONS
    default_component = "protocol.frames"


class ProtocolError(_ReasonError):
    """A topic or a JSON message breaks the protocol; ``reason`` is in :data:`PROTOCOL_REASONS`."""

    reasons = PROTOCOL_REASONS
    default_component = "protocol"
