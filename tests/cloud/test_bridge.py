"""The MQTT bridge (cloud/ingest/bridge.py) on a real broker: acks only what is on disk, resumes
its session, honours a topic prefix, spools model verdicts."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES

from tests.cloud.samples import verdict_doc


@pytest.mark.integration
def test_bridge_acks_only_what_is_on_disk_and_resumes_its_session(broker: object, tmp_path: Path) -> None:
    from edgevib.cloud.ingest.bridge import Bridge
    from edgevib.cloud.testing import GatewaySim

    cfg = load_config(None, env={}, overrides={"broker_url": broker.url, "spool_dir": str(tmp_path / "spool"),  # type: ignore[attr-defined]
                                               "bridge": {"client_id": "bridge-unit", "flush_ms": 20}})
    sim = GatewaySim(broker.url, "p1", "g1")  # type: ignore[attr-defined]

    def spooled() -> list[list[str]]:
        rows: list[list[str]] = []
        for p in sorted(Path(cfg.spool_dir).glob("*.csv")):
            rows += list(csv.reader(io.StringIO(p.read_text())))
        return rows

    b = Bridge(cfg)
    b.start()
    for _ in range(20):
        sim.alert("B007")
    deadline = time.time() + 10
    while len(spooled()) < 20 and time.time() < deadline:
        time.sleep(0.05)
    b.stop()
    assert len(spooled()) == 20
    for _ in range(30):  # bridge down: the broker queues these in the bridge's session
        sim.alert("B014")
    b2 = Bridge(cfg)
    b2.start()
    deadline = time.time() + 10
    while len(spooled()) < 50 and time.time() < deadline:
        time.sleep(0.05)
    b2.stop()
    sim.close()
    rows = spooled()
    ids = [r[SPOOL_COLUMN_NAMES.index("id")] for r in rows]
    assert len(rows) == 50 and len(set(ids)) == 50
    assert {a["id"] for a in sim.published.alerts} == set(ids)
    assert not list(Path(cfg.spool_dir).glob(".*"))  # no temporary files left behind


@pytest.mark.integration
def test_bridge_with_a_non_default_topic_prefix_spools_valid_records(broker: object, tmp_path: Path) -> None:
    from edgevib.cloud.testing import GatewaySim

    cfg = load_config(None, env={}, overrides={"broker_url": broker.url, "spool_dir": str(tmp_path / "spool"),  # type: ignore[attr-defined]
                                               "bridge": {"client_id": "bridge-prefix", "flush_ms": 20,
                                                          "topic_prefix": "acme/vib"}})
    sim = GatewaySim(broker.url, "p1", "g1", prefix="acme/vib")  # type: ignore[attr-defined]
    def send() -> None:
        for _ in range(3):
            sim.alert("OR021")
        sim.heartbeat()

    rows, stats = _bridge_rows(cfg, sim, send, 4)
    assert sorted(r["kind"] for r in rows) == ["alert", "alert", "alert", "heartbeat"], rows
    assert stats.dead == 0


@pytest.mark.integration
def test_bridge_spools_model_status_verdicts(broker: object, tmp_path: Path) -> None:
    from edgevib.cloud.testing import GatewaySim

    cfg = load_config(None, env={}, overrides={"broker_url": broker.url, "spool_dir": str(tmp_path / "spool"),  # type: ignore[attr-defined]
                                               "bridge": {"client_id": "bridge-verdicts", "flush_ms": 20}})
    sim = GatewaySim(broker.url, "p1", "g1")  # type: ignore[attr-defined]
    rows, _ = _bridge_rows(cfg, sim, lambda: sim.model_status(verdict_doc(t_ns=time.time_ns())), 1)
    assert [(r["kind"], r["status"], r["reason"]) for r in rows] == [("model_status", "rolled_back", "probation_failed")]


def _bridge_rows(cfg: Any, sim: Any, send: Callable[[], None], written: int) -> tuple[list[dict[str, str]], Any]:
    """Run a real bridge while ``send`` publishes, until ``written`` records are spooled (10 s
    at most); return the spool's rows by column name and the bridge's counters."""
    from edgevib.cloud.ingest.bridge import Bridge

    b = Bridge(cfg)
    b.start()
    try:
        send()
        deadline = time.time() + 10
        while b.stats.written < written and time.time() < deadline:
            time.sleep(0.05)
    finally:
        b.stop()
        sim.close()
    rows = [dict(zip(SPOOL_COLUMN_NAMES, r, strict=True)) for p in sorted(Path(cfg.spool_dir).glob("*.csv"))
            for r in csv.reader(io.StringIO(p.read_text()))]
    return rows, b.stats
