"""Helpers for tests, benchmarks and the demo: the one way to wait for a condition.

Standard library only, so any part of edgevib (and its tests) can use it. The cloud's
simulated gateways live in :mod:`edgevib.cloud.testing`.

>>> box = [0]
>>> def ready() -> int:
...     box[0] += 1
...     return box[0] if box[0] >= 3 else 0
>>> wait_until(ready, timeout=5, what="three polls", interval=0)
3
>>> wait_until(lambda: False, timeout=0.01, what="never")
Traceback (most recent call last):
...
edgevib.testing.WaitTimeout: timed out after 0.01 s waiting for never
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A condition was not met in time: a failed assertion in a test, a timeout elsewhere."""


def wait_until(cond: Callable[[], T], timeout: float, what: str, check: Callable[[], object] | None = None, *,
               interval: float = 0.05) -> T:
    """Poll ``cond`` until it returns something truthy and return that.

    ``check`` runs between polls (e.g. to fail at once when a process died); on timeout
    :class:`WaitTimeout` names ``what``.
    """
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= end:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        if check is not None:
            check()
        time.sleep(interval)
