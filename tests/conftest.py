"""Shared fixtures: the real CWRU data, a private Mosquitto, seeded randomness.

Tests that need the data or a broker never skip silently in CI: with ``CI=true`` a
missing prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgevib.broker import MosquittoProcess
from edgevib.testing import wait_until  # noqa: F401 - tests import it from here

REPO = Path(__file__).resolve().parents[1]


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
