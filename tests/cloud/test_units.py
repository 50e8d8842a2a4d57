"""Fast tests of the cloud's pure parts: ingest validation, spool lines, fleet logic, store."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.errors import DEAD_REASONS
from edgevib.cloud.flink.fleet import FleetLogic
from edgevib.cloud.ingest.records import MAX_FUTURE_MS, SPOOL_COLUMN_NAMES, dumps_line, normalize
from edgevib.cloud.store import Store

from edgevib.errors import ConfigError
from edgevib.protocol import dumps, make_alert, make_heartbeat, parse_alert
from edgevib.protocol.errors import ProtocolError

T_NS = 1_700_000_000_000_000_000
RECV = T_NS // 1_000_000 + 50


def _alert(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(site="p1", gateway="g1", sensor="de", kind="fault", state="raised", t_ns=T_NS,
                                   cls="OR014", probability=0.8)
    base.update(kw)
    return make_alert(**base)  # type: ignore[arg-type]


def test_valid_alert_and_heartbeat_flatten_with_derived_asset_and_severity() -> None:
    r = normalize("edgevib/v1/p1/g1/alerts", dumps(_alert()), RECV, "m1")
    assert (r["kind"], r["asset"], r["severity"], r["cls"], r["ev_ms"]) == ("alert", "p1/g1/de", "info", "OR014",
                                                                           T_NS // 1_000_000)
    hb = make_heartbeat(site="p1", gateway="g1", t_ns=T_NS, uptime_s=5.0, model={"name": "cnn", "version": "2",
                        "sha256": "ab"}, drops={"bad_crc": 2, "truncated": 1})
    r = normalize("edgevib/v1/p1/g1/heartbeat", dumps(hb), RECV, "m2")
    assert (r["kind"], r["model_version"], r["drops_total"]) == ("heartbeat", "2", 3)


@pytest.mark.parametrize("topic, payload, reason", [
    ("edgevib/v1/p1/g1/alerts", b"{nope", "bad_json"),
    ("edgevib/v1/p1/g1/alerts", b"[]", "bad_json"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**_alert(), "schema": "x"}).encode(), "bad_schema"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({k: v for k, v in _alert().items() if k != "state"}).encode(),
     "missing_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**_alert(), "probability": 2}).encode(), "bad_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**_alert(), "gateway": "g2"}).encode(), "bad_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**_alert(), "t_ns": T_NS + (MAX_FUTURE_MS + 1000) * 10**6}).encode(),
     "bad_time"),
    ("edgevib/v1/p1/g+/alerts", dumps(_alert()), "bad_name"),
    ("other/p1/g1/alerts", dumps(_alert()), "bad_topic"),
    ("edgevib/v1/p1/g1/cmd", b"{}", "bad_topic"),
    ("edgevib/v1/p1/g1/status", b"sleepy", "bad_field"),
])
def test_malformed_messages_become_dead_records_with_a_known_reason(topic: str, payload: bytes, reason: str) -> None:
    r = normalize(topic, payload, RECV, "m")
    assert r["kind"] == "dead" and r["reason"] == reason, r
    assert r["reason"] in DEAD_REASONS and r["detail"]


def test_ingest_and_bridge_config_take_a_non_default_topic_prefix() -> None:
    a = dumps(_alert())
    r = normalize("acme/vib/p1/g1/alerts", a, RECV, "m", prefix="acme/vib")
    assert (r["kind"], r["site"], r["gateway"]) == ("alert", "p1", "g1")
    assert normalize("edgevib/v1/p1/g1/alerts", a, RECV, "m", prefix="acme/vib")["reason"] == "bad_topic"
    cfg = load_config(None, env={"EDGEVIB_BRIDGE__TOPIC_PREFIX": "acme/vib"})
    assert cfg.bridge.topic_prefix == "acme/vib"
    with pytest.raises(ConfigError, match="topic_prefix"):
        load_config(None, env={"EDGEVIB_BRIDGE__TOPIC_PREFIX": "acme//vib"})


def _verdict(**kw: object) -> dict[str, object]:
    from edgevib.protocol.updates import make_status

    base: dict[str, object] = dict(site="p1", gateway="g1", update_id="cnn-2-ab", result="rolled_back",
                                   reason="probation_failed", t_ns=T_NS, detail="12 alerts in probation",
                                   manifest={"name": "cnn", "version": "2", "sha256": "ab" * 32})
    base.update(kw)
    return make_status(**base)  # type: ignore[arg-type]


def test_model_status_verdicts_are_ingested_for_the_store() -> None:
    # A rollback during probation arrives after push() returned: only the bridge sees it.
    r = normalize("edgevib/v1/p1/g1/model_status", dumps(_verdict()), RECV, "m")
    assert (r["kind"], r["site"], r["gateway"], r["ev_ms"], r["id"]) == ("model_status", "p1", "g1",
                                                                        T_NS // 1_000_000, "cnn-2-ab")
    assert (r["model_name"], r["model_version"], r["status"], r["reason"]) == ("cnn", "2", "rolled_back",
                                                                              "probation_failed")
    for bad, reason in ((dict(_verdict(), result="exploded"), "bad_field"), (dict(_verdict(), schema="x"), "bad_schema"),
                        (dict(_verdict(), gateway="g2"), "bad_field"), ({"schema": "edgevib.model_status/1"},
                                                                         "missing_field")):
        d = normalize("edgevib/v1/p1/g1/model_status", json.dumps(bad).encode(), RECV, "m")
        assert (d["kind"], d["reason"]) == ("dead", reason), d
    from edgevib.cloud.flink.sql import plain_query

    assert "FROM spool WHERE kind = 'model_status'" in plain_query(load_config(None, env={}))


def test_ingest_agrees_with_the_edge_parser() -> None:
    # The cloud must refuse exactly what the edge's own parser refuses (plus its cloud checks).
    variants = [dumps(_alert()), b"{}", b"null", json.dumps({**_alert(), "class": "IR"}).encode(),
                json.dumps({**_alert(), "fault_type": "OR"}).encode(), json.dumps({**_alert(), "windows": -1}).encode()]
    for payload in variants:
        try:
            parse_alert(payload)
            edge_ok = True
        except ProtocolError:
            edge_ok = False
        assert (normalize("edgevib/v1/p1/g1/alerts", payload, RECV, "m")["kind"] == "alert") == edge_ok, payload


def test_spool_line_is_one_csv_record_that_round_trips() -> None:
    rec = normalize("edgevib/v1/p1/g1/alerts", b'{"x": "a,b\n\"c\""}', RECV, "m9")
    line = dumps_line(rec)
    assert line.count(b"\n") == 1
    (row,) = list(csv.reader(io.StringIO(line.decode())))
    assert len(row) == len(SPOOL_COLUMN_NAMES)
    got = dict(zip(SPOOL_COLUMN_NAMES, row, strict=True))
    # A raw newline is escaped so that the record stays on one line.
    assert got["mid"] == "m9" and got["reason"] == "bad_json" and got["raw"] == '{"x": "a,b\\n"c""}'


def test_liveness_goes_offline_only_after_silence_and_back_online() -> None:
    f = FleetLogic(offline_after_ms=3000, incident_k=3, incident_window_ms=5000, resolve_ms=4000)
    hb = {"site": "p", "gateway": "g", "ev_ms": 1000, "model_sha256": "a"}
    st, out = f.on_heartbeat(None, "p/g", hb, now_ms=1000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["online"]
    assert f.on_liveness_timer(st, "p/g", 3999)[1] == []
    st, out = f.on_liveness_timer(st, "p/g", 4000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["offline"]
    st, out = f.on_heartbeat(st, "p/g", {**hb, "ev_ms": 9000, "model_sha256": "b"}, now_ms=9000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["online", "model_changed"]
    # A replayed older heartbeat does not move the last sighting back.
    st, _ = f.on_heartbeat(st, "p/g", {**hb, "ev_ms": 500, "model_sha256": "b"}, now_ms=500)
    assert st["last_seen_ms"] == 9000


def test_incident_needs_k_alerts_in_the_window_and_resolves_once() -> None:
    f = FleetLogic(offline_after_ms=3000, incident_k=3, incident_window_ms=5000, resolve_ms=4000)
    st = None
    for end in (1000, 7000):  # 1 + 1 alerts, 6 s apart: never 3 within 5 s
        st, out = f.on_bucket(st, "a", {"site": "p", "window_end": end, "n": 1})
        assert out == []
    st, out = f.on_bucket(st, "a", {"site": "p", "window_end": 8000, "n": 2})
    (inc,) = [r for k, _, r in out if k == "incident"]
    assert inc["status"] == "open" and inc["n_alerts"] == 3
    assert f.on_resolve_timer(st, "a", 11_999)[1] == []
    st, out = f.on_resolve_timer(st, "a", 12_000)
    assert [r["status"] for k, _, r in out if k == "incident"] == ["resolved"]
    assert f.on_resolve_timer(st, "a", 20_000)[1] == []


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


def test_config_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="window_s"):
        load_config(None, env={"EDGEVIB_JOB__WINDOW_S": "1.5"})
    with pytest.raises(ConfigError, match="store_url"):
        load_config(None, env={"EDGEVIB_STORE_URL": "mysql://x"})
    with pytest.raises(ConfigError, match="min_incident_severity"):
        load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": "urgent"})


def test_ingest_keeps_the_edge_severity_and_derives_it_only_for_older_agents() -> None:
    # The edge decides (p >= 0.95 and physics agrees: critical); the cloud must not overrule
    # it from the class name: a fault-type class (OR, no size) has no size to derive from.
    for cls, given in (("OR", "critical"), ("OR014", "critical"), ("IR021", "info")):
        a = _alert(cls=cls, probability=0.5, severity=given)
        assert normalize("edgevib/v1/p1/g1/alerts", dumps(a), RECV, "m")["severity"] == given
    old = {k: v for k, v in _alert(cls="OR", probability=0.97, agree=True).items() if k != "severity"}
    assert normalize("edgevib/v1/p1/g1/alerts", dumps(old), RECV, "m")["severity"] == "critical"
    bad = normalize("edgevib/v1/p1/g1/alerts", dumps({**_alert(), "severity": "high"}), RECV, "m")
    assert (bad["kind"], bad["reason"]) == ("dead", "bad_field")


def test_min_incident_severity_uses_the_protocol_vocabulary() -> None:
    from edgevib.cloud.flink.sql import views

    cfg = load_config(None, env={})
    assert cfg.job.min_incident_severity == "warning"
    serious = [v for v in views(cfg) if "VIEW serious" in v][0]
    assert "'warning', 'critical'" in serious and "'info'" not in serious
    crit = load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": "critical"})
    assert "IN ('critical')" in [v for v in views(crit) if "VIEW serious" in v][0]
    # The old names fail with the new name to use.
    for old, new in (("low", "info"), ("medium", "warning"), ("high", "critical")):
        with pytest.raises(ConfigError, match=f"min_incident_severity='{old}'.*{new}"):
            load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": old})


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


@pytest.fixture
def pg_url() -> Iterator[str]:
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
    rows, _ = _bridge_rows(cfg, sim, lambda: sim.model_status(_verdict(t_ns=time.time_ns())), 1)
    assert [(r["kind"], r["status"], r["reason"]) for r in rows] == [("model_status", "rolled_back", "probation_failed")]


def _indicators(**kw: object) -> dict[str, object]:
    from edgevib.protocol import make_indicators

    base: dict[str, object] = dict(
        site="p1", gateway="g1", sensor="de", asset="pump-3", t_ns=T_NS, duration_s=2.0, sample_rate=12000.0,
        acc_rms_g=0.29, acc_peak_g=1.57, crest=5.41, kurtosis=5.6, vel_rms_mm_s=3.1, iso_zone="C", iso_group=2,
        iso_foundation="rigid", env_db={"bpfo": 4.1, "bpfi": 27.2, "bsf2": 3.0, "ftf": 1.0}, rpm=1797.0,
        rpm_source="estimated", anomaly_ratio=None)
    base.update(kw)
    return make_indicators(**base)  # type: ignore[arg-type]


def test_indicators_are_ingested_as_store_ready_records(tmp_path: Path) -> None:
    from edgevib.cloud.flink.sql import INDICATOR_COLUMNS, plain_query
    from edgevib.cloud.ingest.bridge import BRIDGED_KINDS
    from edgevib.cloud.store import _col_names

    assert "indicators" in BRIDGED_KINDS
    r = normalize("edgevib/v1/p1/g1/indicators", dumps(_indicators()), RECV, "m1")
    assert (r["kind"], r["sensor"], r["asset"], r["ev_ms"]) == ("indicator", "de", "pump-3", T_NS // 1_000_000)
    assert (r["vel_rms_mm_s"], r["iso_zone"], r["iso_group"], r["env_bpfi_db"], r["rpm_source"]) == (
        3.1, "C", 2, 27.2, "estimated")
    assert r["anomaly_ratio"] is None and len(r["id"]) == 24
    # the id is the sensor and signal time: a re-delivered message is the same row, the next one is not
    assert normalize("edgevib/v1/p1/g1/indicators", dumps(_indicators()), RECV, "m2")["id"] == r["id"]
    assert normalize("edgevib/v1/p1/g1/indicators", dumps(_indicators(t_ns=T_NS + 1)), RECV, "m3")["id"] != r["id"]
    # every spool column the job forwards exists in the spool and, renamed t_ms, in the store
    assert set(INDICATOR_COLUMNS) <= set(SPOOL_COLUMN_NAMES)
    assert set(INDICATOR_COLUMNS) | {"t_ms"} == set(_col_names("indicators"))
    line = dumps_line(r)
    (row,) = list(csv.reader(io.StringIO(line.decode())))
    got = dict(zip(SPOOL_COLUMN_NAMES, row, strict=True))
    assert (got["kind"], got["vel_rms_mm_s"], got["iso_zone"], got["anomaly_ratio"]) == ("indicator", "3.1", "C", "")
    q = plain_query(load_config(None, env={}))
    assert "'indicator_rollup'" in q and "INTERVAL '0 00:01:00.000'" in q and "INTERVAL '0 01:00:00.000'" in q
    # the store takes the job's rows as they come (raw and rolled up), idempotently
    s = Store(f"sqlite:///{tmp_path}/s.db")
    raw = {c: r.get(c) for c in INDICATOR_COLUMNS} | {"t_ms": r["ev_ms"]}
    s.apply_many("indicator", [raw, raw])
    assert s.query("SELECT sensor, t_ms, vel_rms_mm_s, iso_zone, env_bpfi_db FROM indicators") == [
        ("de", T_NS // 1_000_000, 3.1, "C", 27.2)]
    roll = {"site": "p1", "gateway": "g1", "sensor": "de", "asset": "pump-3", "resolution_s": 60, "window_start": 0,
            "window_end": 60_000, "n": 6, "vel_min": 1.0, "vel_mean": 2.0, "vel_max": 3.0, "worst_zone": "C"}
    s.apply("indicator_rollup", roll)
    s.apply("indicator_rollup", roll)
    (got_roll,) = s.indicator_rollups(60)
    assert got_roll["n"] == 6 and got_roll["vel_mean"] == 2.0 and got_roll["worst_zone"] == "C"
    assert s.indicator_rollups(3600) == []
    s.close()


@pytest.mark.parametrize(("payload", "reason"), [
    (json.dumps({**_indicators(), "vel_rms_mm_s": -1}).encode(), "bad_field"),
    (json.dumps({**_indicators(), "iso_zone": "Z"}).encode(), "bad_field"),
    (json.dumps({k: v for k, v in _indicators().items() if k != "kurtosis"}).encode(), "missing_field"),
    (json.dumps({**_indicators(), "gateway": "g2"}).encode(), "bad_field"),
    (json.dumps({**_indicators(), "t_ns": T_NS + (MAX_FUTURE_MS + 1000) * 10**6}).encode(), "bad_time"),
])
def test_bad_indicators_become_dead_letters(payload: bytes, reason: str) -> None:
    r = normalize("edgevib/v1/p1/g1/indicators", payload, RECV, "m")
    assert (r["kind"], r["reason"]) == ("dead", reason), r


def test_indicator_rollup_windows_are_validated() -> None:
    import tomllib

    from edgevib.cloud.config import to_toml

    cfg = load_config(None, env={"EDGEVIB_JOB__INDICATOR_ROLLUPS_S": "60,600"})
    assert cfg.job.indicator_rollups_s == (60.0, 600.0)
    # the job process reads the config back from TOML (cloud/flink/runner.py)
    assert tomllib.loads(to_toml(cfg))["job"]["indicator_rollups_s"] == [60.0, 600.0]
    with pytest.raises(ConfigError, match="indicator_rollups_s"):
        load_config(None, env={"EDGEVIB_JOB__INDICATOR_ROLLUPS_S": "60,0.5"})


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
