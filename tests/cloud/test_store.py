"""The store (cloud/store.py): idempotent upserts on SQLite and PostgreSQL (``pg_url``: conftest.py),
migration of an old store."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgevib.cloud.store import Store


def test_store_upserts_are_idempotent(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path}/s.db")
    row = {"asset": "a", "site": "p", "window_start": 0, "window_end": 2000, "cls": "B007", "severity": "info", "n": 3}
    s.apply("asset_counts", row)
    s.apply("asset_counts", row)  # a replay after a restart
    assert s.asset_counts() == {("a", 0, "B007", "info"): 3}
    s.apply_many("alert", [{"id": "x", "ev_ms": 1}, {"id": "x", "ev_ms": 1}, {"id": "y", "ev_ms": 2}])
    assert s.query("SELECT COUNT(*) FROM alerts")[0][0] == 2
    with pytest.raises(Exception, match="record kind"):
        s.apply("nonsense", {})
    s.close()


def test_store_health_counts_per_severity_and_migrates_an_old_store(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)  # the columns and values an older version wrote
    con.execute("CREATE TABLE asset_health (asset TEXT, site TEXT, window_start BIGINT, window_end BIGINT, "
                "n_alerts BIGINT, n_low BIGINT, n_medium BIGINT, n_high BIGINT, health DOUBLE PRECISION, "
                "PRIMARY KEY (asset, window_start))")
    con.execute("INSERT INTO asset_health VALUES ('a', 'p', 0, 10, 3, 1, 1, 1, 50.0)")
    con.execute("CREATE TABLE asset_counts (asset TEXT, site TEXT, window_start BIGINT, window_end BIGINT, "
                "cls TEXT, severity TEXT, n BIGINT, PRIMARY KEY (asset, window_start, cls, severity))")
    con.execute("INSERT INTO asset_counts VALUES ('a', 'p', 0, 10, 'IR021', 'high', 1)")
    con.commit()
    con.close()
    s = Store(f"sqlite:///{db}")
    assert s.query("SELECT n_info, n_warning, n_critical FROM asset_health") == [(1, 1, 1)]
    assert s.asset_counts() == {("a", 0, "IR021", "critical"): 1}
    s.apply("health", {"asset": "b", "site": "p", "window_start": 0, "window_end": 10, "n_alerts": 2,
                       "n_info": 0, "n_warning": 0, "n_critical": 2, "health": 54.9})
    assert s.query("SELECT n_critical FROM asset_health WHERE asset = 'b'") == [(2,)]
    s.close()


@pytest.mark.integration
def test_postgres_store_same_upserts(pg_url: str) -> None:
    s = Store(pg_url)
    row = {"asset": "a", "site": "p", "window_start": 0, "window_end": 2000, "cls": "B007", "severity": "info", "n": 3}
    s.apply("asset_counts", row)
    s.apply("asset_counts", {**row, "n": 4})
    s.apply_many("alert", [{"id": "x", "ev_ms": 1}, {"id": "x", "ev_ms": 1}, {"id": "y", "ev_ms": 2}])
    assert s.asset_counts() == {("a", 0, "B007", "info"): 4}
    assert s.query("SELECT COUNT(*) FROM alerts")[0][0] == 2
    assert s.summary()["alerts"] == 2
    roll = {"site": "p", "gateway": "g", "sensor": "de", "resolution_s": 60, "window_start": 0, "window_end": 60_000,
            "n": 6, "vel_min": 1.0, "vel_mean": 2.0, "vel_max": 3.0, "worst_zone": "C"}
    s.apply("indicator_rollup", roll)
    s.apply("indicator_rollup", {**roll, "n": 7})
    s.apply_many("indicator", [{"id": "i1", "t_ms": 1, "vel_rms_mm_s": 2.5, "iso_group": 2}] * 2)
    assert [(r["n"], r["worst_zone"]) for r in s.indicator_rollups(60)] == [(7, "C")]
    assert s.query("SELECT id, vel_rms_mm_s, iso_group FROM indicators") == [("i1", 2.5, 2)]
    s.close()
