"""Cloud fixtures: prerequisites (pyflink, a JDK) fail in CI and skip elsewhere."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator

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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the PostgreSQL at EDGEVIB_TEST_POSTGRES (fails in CI without one, skips elsewhere)."""
    psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    base = os.environ.get("EDGEVIB_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
    schema = f"edgevib_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {base} unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {base} unreachable")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
