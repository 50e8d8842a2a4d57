"""Ingest validation (cloud/ingest/records.py): alerts, heartbeats, verdicts and indicators
become store-ready records or dead letters with a known reason; spool lines round-trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.errors import DEAD_REASONS
from edgevib.cloud.ingest.records import MAX_FUTURE_MS, SPOOL_COLUMN_NAMES, dumps_line, normalize
from edgevib.cloud.store import Store

from edgevib.errors import ConfigError
from edgevib.protocol import dumps, make_heartbeat, parse_alert
from edgevib.protocol.errors import ProtocolError
from tests.cloud.samples import RECV, T_NS, alert_doc, indicators_doc, verdict_doc


def test_valid_alert_and_heartbeat_flatten_with_derived_asset_and_severity() -> None:
    r = normalize("edgevib/v1/p1/g1/alerts", dumps(alert_doc()), RECV, "m1")
    assert (r["kind"], r["asset"], r["severity"], r["cls"], r["ev_ms"]) == ("alert", "p1/g1/de", "info", "OR014",
                                                                           T_NS // 1_000_000)
    hb = make_heartbeat(site="p1", gateway="g1", t_ns=T_NS, uptime_s=5.0, model={"name": "cnn", "version": "2",
                        "sha256": "ab"}, drops={"bad_crc": 2, "truncated": 1})
    r = normalize("edgevib/v1/p1/g1/heartbeat", dumps(hb), RECV, "m2")
    assert (r["kind"], r["model_version"], r["drops_total"]) == ("heartbeat", "2", 3)


@pytest.mark.parametrize("topic, payload, reason", [
    ("edgevib/v1/p1/g1/alerts", b"{nope", "bad_json"),
    ("edgevib/v1/p1/g1/alerts", b"[]", "bad_json"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**alert_doc(), "schema": "x"}).encode(), "bad_schema"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({k: v for k, v in alert_doc().items() if k != "state"}).encode(),
     "missing_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**alert_doc(), "probability": 2}).encode(), "bad_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**alert_doc(), "gateway": "g2"}).encode(), "bad_field"),
    ("edgevib/v1/p1/g1/alerts", json.dumps({**alert_doc(), "t_ns": T_NS + (MAX_FUTURE_MS + 1000) * 10**6}).encode(),
     "bad_time"),
    ("edgevib/v1/p1/g+/alerts", dumps(alert_doc()), "bad_name"),
    ("other/p1/g1/alerts", dumps(alert_doc()), "bad_topic"),
    ("edgevib/v1/p1/g1/cmd", b"{}", "bad_topic"),
    ("edgevib/v1/p1/g1/status", b"sleepy", "bad_field"),
])
def test_malformed_messages_become_dead_records_with_a_known_reason(topic: str, payload: bytes, reason: str) -> None:
    r = normalize(topic, payload, RECV, "m")
    assert r["kind"] == "dead" and r["reason"] == reason, r
    assert r["reason"] in DEAD_REASONS and r["detail"]


def test_ingest_and_bridge_config_take_a_non_default_topic_prefix() -> None:
    a = dumps(alert_doc())
    r = normalize("acme/vib/p1/g1/alerts", a, RECV, "m", prefix="acme/vib")
    assert (r["kind"], r["site"], r["gateway"]) == ("alert", "p1", "g1")
    assert normalize("edgevib/v1/p1/g1/alerts", a, RECV, "m", prefix="acme/vib")["reason"] == "bad_topic"
    cfg = load_config(None, env={"EDGEVIB_BRIDGE__TOPIC_PREFIX": "acme/vib"})
    assert cfg.bridge.topic_prefix == "acme/vib"
    with pytest.raises(ConfigError, match="topic_prefix"):
        load_config(None, env={"EDGEVIB_BRIDGE__TOPIC_PREFIX": "acme//vib"})


def test_model_status_verdicts_are_ingested_for_the_store() -> None:
    # A rollback during probation arrives after push() returned: only the bridge sees it.
    r = normalize("edgevib/v1/p1/g1/model_status", dumps(verdict_doc()), RECV, "m")
    assert (r["kind"], r["site"], r["gateway"], r["ev_ms"], r["id"]) == ("model_status", "p1", "g1",
                                                                        T_NS // 1_000_000, "cnn-2-ab")
    assert (r["model_name"], r["model_version"], r["status"], r["reason"]) == ("cnn", "2", "rolled_back",
                                                                              "probation_failed")
    for bad, reason in ((dict(verdict_doc(), result="exploded"), "bad_field"), (dict(verdict_doc(), schema="x"), "bad_schema"),
                        (dict(verdict_doc(), gateway="g2"), "bad_field"), ({"schema": "edgevib.model_status/1"},
                                                                         "missing_field")):
        d = normalize("edgevib/v1/p1/g1/model_status", json.dumps(bad).encode(), RECV, "m")
        assert (d["kind"], d["reason"]) == ("dead", reason), d
    from edgevib.cloud.flink.sql import plain_query

    assert "FROM spool WHERE kind = 'model_status'" in plain_query(load_config(None, env={}))


def test_ingest_agrees_with_the_edge_parser() -> None:
    # The cloud must refuse exactly what the edge's own parser refuses (plus its cloud checks).
    variants = [dumps(alert_doc()), b"{}", b"null", json.dumps({**alert_doc(), "class": "IR"}).encode(),
                json.dumps({**alert_doc(), "fault_type": "OR"}).encode(), json.dumps({**alert_doc(), "windows": -1}).encode()]
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


def test_ingest_keeps_the_edge_severity_and_derives_it_only_for_older_agents() -> None:
    # The edge decides (p >= 0.95 and physics agrees: critical); the cloud must not overrule
    # it from the class name: a fault-type class (OR, no size) has no size to derive from.
    for cls, given in (("OR", "critical"), ("OR014", "critical"), ("IR021", "info")):
        a = alert_doc(cls=cls, probability=0.5, severity=given)
        assert normalize("edgevib/v1/p1/g1/alerts", dumps(a), RECV, "m")["severity"] == given
    old = {k: v for k, v in alert_doc(cls="OR", probability=0.97, agree=True).items() if k != "severity"}
    assert normalize("edgevib/v1/p1/g1/alerts", dumps(old), RECV, "m")["severity"] == "critical"
    bad = normalize("edgevib/v1/p1/g1/alerts", dumps({**alert_doc(), "severity": "high"}), RECV, "m")
    assert (bad["kind"], bad["reason"]) == ("dead", "bad_field")


def test_indicators_are_ingested_as_store_ready_records(tmp_path: Path) -> None:
    from edgevib.cloud.flink.sql import INDICATOR_COLUMNS, plain_query
    from edgevib.cloud.ingest.bridge import BRIDGED_KINDS
    from edgevib.cloud.store import _col_names

    assert "indicators" in BRIDGED_KINDS
    r = normalize("edgevib/v1/p1/g1/indicators", dumps(indicators_doc()), RECV, "m1")
    assert (r["kind"], r["sensor"], r["asset"], r["ev_ms"]) == ("indicator", "de", "pump-3", T_NS // 1_000_000)
    assert (r["vel_rms_mm_s"], r["iso_zone"], r["iso_group"], r["env_bpfi_db"], r["rpm_source"]) == (
        3.1, "C", 2, 27.2, "estimated")
    assert r["anomaly_ratio"] is None and len(r["id"]) == 24
    # the id is the sensor and signal time: a re-delivered message is the same row, the next one is not
    assert normalize("edgevib/v1/p1/g1/indicators", dumps(indicators_doc()), RECV, "m2")["id"] == r["id"]
    assert normalize("edgevib/v1/p1/g1/indicators", dumps(indicators_doc(t_ns=T_NS + 1)), RECV, "m3")["id"] != r["id"]
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
    (json.dumps({**indicators_doc(), "vel_rms_mm_s": -1}).encode(), "bad_field"),
    (json.dumps({**indicators_doc(), "iso_zone": "Z"}).encode(), "bad_field"),
    (json.dumps({k: v for k, v in indicators_doc().items() if k != "kurtosis"}).encode(), "missing_field"),
    (json.dumps({**indicators_doc(), "gateway": "g2"}).encode(), "bad_field"),
    (json.dumps({**indicators_doc(), "t_ns": T_NS + (MAX_FUTURE_MS + 1000) * 10**6}).encode(), "bad_time"),
])
def test_bad_indicators_become_dead_letters(payload: bytes, reason: str) -> None:
    r = normalize("edgevib/v1/p1/g1/indicators", payload, RECV, "m")
    assert (r["kind"], r["reason"]) == ("dead", reason), r
