"""Shared fixtures: the real CWRU data, a private Mosquitto, seeded randomness.

Tests that need the data or a broker never skip silently in CI: with ``CI=true`` a
missing prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevib.broker import MosquittoProcess

REPO = Path(__file__).resolve().parents[1]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, check: Callable[[], None] | None = None, *,
               interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy and return that; ``check`` runs between
    polls (e.g. to fail at once when a process died); AssertionError naming ``what`` on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        if check is not None:
            check()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: prerequisites must be present, not skipped)")
    pytest.skip(reason)


def _shared_data(env: str, name: str, what: str) -> Path:
    """``$env``, else ``../shared/<name>``; fails in CI (skips elsewhere) without its manifest."""
    d = Path(os.environ.get(env, REPO.parent / "shared" / name))
    if not (d / "manifest.csv").exists():
        _missing(f"{what} not found at {d}; set {env}")
    return d


@pytest.fixture(scope="session")
def cwru_dir() -> Path:
    """The real CWRU recordings (``../shared/cwru`` or ``$EDGEVIB_CWRU_DIR``)."""
    return _shared_data("EDGEVIB_CWRU_DIR", "cwru", "CWRU data")


@pytest.fixture(scope="session")
def bearings_dir() -> Path:
    """The three other rigs (``../shared/bearings`` or ``$EDGEVIB_BEARINGS_DIR``)."""
    return _shared_data("EDGEVIB_BEARINGS_DIR", "bearings", "bearing data of the other rigs")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def broker() -> Iterator[MosquittoProcess]:
    """A private Mosquitto on its own port: tests may stop and restart it freely."""
    try:
        b = MosquittoProcess()
    except Exception as exc:  # no mosquitto binary
        _missing(str(exc))
        raise
    b.start()
    try:
        yield b
    finally:
        b.stop()
