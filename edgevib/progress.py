"""Progress reporting for long work (training, evaluation, upload).

Library code takes an optional ``progress`` callable and calls it as
``progress(done, total, message)``; only the CLI decides how to show it.

>>> seen = []
>>> report = lambda done, total, msg: seen.append((done, total, msg))
>>> for i in range(3):
...     report(i + 1, 3, "epoch")
>>> seen[-1]
(3, 3, 'epoch')
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def null_progress(done: int, total: int, message: str = "") -> None:
    """Discard progress."""


class Bar:
    """A one-line text bar on stderr; redraws at most every ``min_interval`` seconds."""

    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._last = 0.0
        self._t0 = time.monotonic()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        final = total > 0 and done >= total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        frac = done / total if total > 0 else 0.0
        filled = int(round(24 * frac))
        line = f"\r{self.label} [{'#' * filled}{'.' * (24 - filled)}] {done}/{total} {now - self._t0:5.1f}s {message}"
        if self.stream.isatty():
            self.stream.write(line[:160].ljust(100))
            if final:
                self.stream.write("\n")
        elif final or frac in (0.0,) or done % max(1, total // 10) == 0:
            self.stream.write(line.lstrip("\r")[:160] + "\n")
        self.stream.flush()
