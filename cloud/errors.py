"""Errors of ``edgevib.cloud``: each names the component, the bad value and the fix.

Records rejected by the job are not exceptions: they go to the dead-letter table with a
``reason`` from :data:`DEAD_REASONS`, so counts per reason stay bounded.

>>> str(CloudError("cloud.store", "url 'x://'", "use sqlite:///PATH or postgresql://..."))
"cloud.store: url 'x://'; fix: use sqlite:///PATH or postgresql://..."
"""

from __future__ import annotations

from edgevib.errors import FatalError, RetryableError
from edgevib.protocol.errors import PROTOCOL_REASONS

# The edge protocol's reasons, plus ``bad_time`` (event time far in the future, which
# would push the watermark past every honest record).
DEAD_REASONS: tuple[str, ...] = (*PROTOCOL_REASONS, "bad_time")


class CloudError(FatalError):
    """A fatal error in the cloud job, bridge or store (bad config, bad state)."""


class CloudRetryableError(RetryableError):
    """A cloud operation that may succeed later (broker away, job still starting)."""
