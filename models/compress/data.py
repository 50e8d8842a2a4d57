"""The windows compression trains, calibrates and evaluates on (real CWRU recordings).

One split serves both honest protocols at once: recordings at the ``holdout_loads`` are
never trained on (the load hold-out); the others are split by time (first 70 % train, last
30 % test, no window across the cut), so a single teacher gets both test sets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevib.models.compress.errors import CompressError
from edgevib.models.data import load_dir
from edgevib.models.split import WindowSet, time_split, windows

log = logging.getLogger(__name__)
_COMP = "models.compress.data"


@dataclass(frozen=True)
class Splits:
    """``train`` and ``test_time`` from loads outside ``holdout_loads``; ``test_load`` from those."""

    train: WindowSet
    test_time: WindowSet
    test_load: WindowSet


def splits(data_dir: str | Path, classes: Sequence[str], window: int = 2048, *, hop: int = 1024,
           test_hop: int = 2048, holdout_loads: Sequence[int] = (3,)) -> Splits:
    """Load ``data_dir`` and cut the three window sets (``test_hop`` apart in the test sets)."""
    recs = load_dir(data_dir, classes=list(classes))
    held = [r for r in recs if r.load_hp in holdout_loads]
    rest = [r for r in recs if r.load_hp not in holdout_loads]
    if not held or not rest:
        raise CompressError(_COMP, f"holdout_loads={tuple(holdout_loads)} leaves {len(rest)} train and "
                            f"{len(held)} hold-out recordings in {str(data_dir)!r}",
                            "use a folder with recordings at several motor loads (CWRU: 0-3)")
    train, _ = time_split(rest, window, hop, classes=classes)
    _, test_time = time_split(rest, window, test_hop, classes=classes)
    # the time-split test cut starts where the train part ends; recut it with test_hop
    test_load = windows(held, window, test_hop, classes)
    log.info("compress data: %d train, %d time-test, %d load-test windows", len(train), len(test_time),
             len(test_load))
    return Splits(train, test_time, test_load)


def training_windows(data_dir: Any, classes: Sequence[str], window: int = 2048) -> WindowSet:
    """Training windows for fine-tuning/calibration: the time-split train part of every recording."""
    recs = load_dir(data_dir, classes=list(classes))
    return time_split(recs, window, 1024, classes=classes)[0]
