"""Cloud fixtures: prerequisites (pyflink, a JDK) fail in CI and skip elsewhere."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: prerequisites must be present, not skipped)")
    pytest.skip(reason)


def require_flink() -> None:
    """pyflink importable, ``java``/``javac``/``jar`` on PATH, and ``mosquitto``."""
    if importlib.util.find_spec("pyflink") is None:
        missing("pyflink is not installed: pip install 'edgevib[cloud]'")
    for tool in ("java", "javac", "jar"):
        if shutil.which(tool) is None:
            missing(f"{tool} not on PATH: apt-get install openjdk-17-jdk-headless")
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        missing("mosquitto not installed: apt-get install mosquitto")


@pytest.fixture(scope="session")
def flink_prereqs() -> None:
    require_flink()
