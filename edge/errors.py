"""Errors of ``edgevib.edge``: each names the component, the bad value and the fix.

Errors about the wire (frames, messages, model updates) live in :mod:`edgevib.protocol.errors`.

>>> str(ModelError("edge.model", "input [1, 2048]", "export with input [N, 1, 2048]"))
'edge.model: input [1, 2048]; fix: export with input [N, 1, 2048]'
"""

from __future__ import annotations

from edgevib.errors import FatalError, RetryableError


class EdgeError(FatalError):
    """Base class of the edge package's fatal errors."""


class EdgeRetryableError(RetryableError):
    """An edge operation that may succeed later (broker away, disk busy)."""


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
