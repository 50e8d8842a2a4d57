"""Topics, alert and heartbeat schemas."""

from __future__ import annotations

import json

import pytest

from edgevib.protocol import (
    ALERT_SCHEMA,
    Topics,
    check_name,
    dumps,
    make_alert,
    make_heartbeat,
    parse_alert,
    parse_heartbeat,
    parse_topic,
    subscription,
)
from edgevib.protocol.errors import PROTOCOL_REASONS, ProtocolError


def _reason(fn, *a) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as ei:
        fn(*a)
    assert ei.value.reason in PROTOCOL_REASONS
    return ei.value.reason


def test_topics_round_trip() -> None:
    t = Topics("s1", "gw.1")
    for topic, kind in [(t.alerts, "alerts"), (t.heartbeat, "heartbeat"), (t.status, "status"),
                        (t.models, "models"), (t.cmd, "cmd")]:
        info = parse_topic(topic)
        assert (info.site, info.gateway, info.kind, info.sensor) == ("s1", "gw.1", kind, None)
    info = parse_topic(t.raw("de:0"))
    assert (info.kind, info.sensor) == ("raw", "de:0")
    assert t.raw_all == "edgevib/v1/s1/gw.1/sensors/+/raw"
    assert subscription("alerts") == "edgevib/v1/+/+/alerts"
    assert subscription("raw", "s1") == "edgevib/v1/s1/+/sensors/+/raw"


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "x" * 65, "a b", "a\n", "é", 3])
def test_bad_names(name: object) -> None:
    assert _reason(check_name, name) == "bad_name"
    if isinstance(name, str):
        assert _reason(Topics("s", "g").raw, name) == "bad_name"


@pytest.mark.parametrize("topic", ["other/v1/a/b/alerts", "edgevib/v1/a/b/nope",
                                   "edgevib/v1/a/b/sensors/x/cooked", "edgevib/v1/a/b/c/alerts",
                                   "edgevib/v1/a/+/alerts"])
def test_bad_topics(topic: str) -> None:
    assert _reason(parse_topic, topic) in ("bad_topic", "bad_name")


def _alert(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(site="s", gateway="g", sensor="de", kind="fault", state="raised",
                                   t_ns=123, cls="OR014", probability=0.9, physics="OR", agree=True,
                                   model={"name": "cnn", "version": "1", "sha256": "ab"},
                                   evidence={"bpfo_snr_db": 12.5}, windows=3)
    base.update(kw)
    return make_alert(**base)  # type: ignore[arg-type]


def test_alert_round_trip_and_stable_id() -> None:
    a = _alert()
    assert a["schema"] == ALERT_SCHEMA and a["fault_type"] == "OR"
    assert parse_alert(dumps(a)) == json.loads(dumps(a))
    assert _alert()["id"] == a["id"] and _alert(t_ns=124)["id"] != a["id"]
    anomaly = make_alert(site="s", gateway="g", sensor="de", kind="anomaly", state="raised", t_ns=1,
                         anomaly_score=9.0, anomaly_threshold=4.0)
    assert parse_alert(dumps(anomaly))["kind"] == "anomaly"


@pytest.mark.parametrize(("change", "reason"), [
    ({"schema": "edgevib.alert/9"}, "bad_schema"),
    ({"kind": "smoke"}, "bad_field"),
    ({"probability": 1.5}, "bad_field"),
    ({"probability": True}, "bad_field"),
    ({"class": "XX1"}, "bad_field"),
    ({"fault_type": "IR"}, "bad_field"),
    ({"physics": "cage"}, "bad_field"),
    ({"agree": "yes"}, "bad_field"),
    ({"sensor": "a/b"}, "bad_name"),
    ({"t_ns": 1.5}, "bad_field"),
    ({"model": {"name": "x"}}, "missing_field"),
])
def test_alert_validation(change: dict[str, object], reason: str) -> None:
    doc = {**_alert(), **change}
    assert _reason(parse_alert, json.dumps(doc).encode()) == reason


def test_alert_missing_field_and_garbage() -> None:
    doc = _alert()
    del doc["site"]
    assert _reason(parse_alert, dumps(doc)) == "missing_field"
    assert _reason(parse_alert, b"[1]") == "bad_json"
    assert _reason(parse_alert, b"\xff") == "bad_json"
    assert _reason(parse_alert, b" " * 300_000) == "oversized"
    nan = dumps(_alert()).replace(b'"probability":0.9', b'"probability":NaN')
    assert _reason(parse_alert, nan) == "bad_field"
    with pytest.raises(ProtocolError):
        _alert(probability=float("nan"))


def test_heartbeat_round_trip_and_validation() -> None:
    hb = make_heartbeat(site="s", gateway="g", t_ns=5, uptime_s=12.5,
                        sensors={"de": {"frames": 10, "windows": 4}}, drops={"bad_crc": 2},
                        resources={"cpu_percent": 3.5, "rss_mb": 80.0}, outbox_pending=1,
                        agent_version="0.1.0")
    assert parse_heartbeat(dumps(hb))["drops"] == {"bad_crc": 2}
    bad = {**hb, "sensors": {"de": {"frames": "ten"}}}
    assert _reason(parse_heartbeat, json.dumps(bad).encode()) == "bad_field"
    bad = {**hb, "uptime_s": -1}
    assert _reason(parse_heartbeat, json.dumps(bad).encode()) == "bad_field"
    assert _reason(parse_heartbeat, dumps(_alert())) == "bad_schema"


def test_one_severity_vocabulary_decided_by_the_edge_and_validated() -> None:
    from edgevib.protocol import SEVERITIES, severity_at_least, severity_of

    assert SEVERITIES == ("info", "warning", "critical")
    assert severity_at_least("critical", "warning") and not severity_at_least("info", "warning")
    # make_alert decides from the evidence it is given: confidence and physics agreement.
    assert _alert(probability=0.97, agree=True)["severity"] == "critical"
    assert _alert(probability=0.9, agree=True)["severity"] == "warning"
    assert _alert(probability=0.97, agree=False)["severity"] == "warning"
    assert _alert(probability=0.9, agree=False)["severity"] == "info"
    assert _alert(state="cleared", probability=None)["severity"] == "info"
    anomaly = make_alert(site="s", gateway="g", sensor="de", kind="anomaly", state="raised", t_ns=1, anomaly_score=9.0)
    assert anomaly["severity"] == "warning"
    # A fault-type model (no size in the class name) gets a severity like any other.
    assert _alert(cls="OR", probability=0.99, agree=True)["severity"] == "critical"
    assert _alert(severity="info", probability=0.99)["severity"] == "info"  # an explicit decision is kept
    assert parse_alert(dumps(_alert(probability=0.97)))["severity"] == "critical"
    # The old cloud vocabulary and garbage are refused, naming the allowed values.
    for bad in ("high", "low", "CRITICAL", 3):
        with pytest.raises(ProtocolError, match="info, warning, critical") as ei:
            parse_alert(json.dumps({**_alert(), "severity": bad}).encode())
        assert ei.value.reason == "bad_field"
    with pytest.raises(ProtocolError):
        _alert(severity="high")
    # An alert from an older agent (no severity field) is valid; severity_of derives it once.
    old = {k: v for k, v in _alert(probability=0.97, agree=True).items() if k != "severity"}
    assert "severity" not in parse_alert(json.dumps(old).encode())
    assert severity_of(old) == "critical" and severity_of({**old, "agree": None}) == "warning"
    assert severity_of({**old, "severity": "info"}) == "info"


def test_topic_prefix_is_one_setting_for_building_and_parsing() -> None:
    t = Topics("s1", "gw", prefix="acme/vib")
    assert (t.alerts, t.raw("de"), t.raw_all) == ("acme/vib/s1/gw/alerts", "acme/vib/s1/gw/sensors/de/raw",
                                                  "acme/vib/s1/gw/sensors/+/raw")
    info = parse_topic(t.raw("de"), prefix="acme/vib")
    assert (info.site, info.gateway, info.kind, info.sensor) == ("s1", "gw", "raw", "de")
    assert parse_topic(t.model_status, prefix="acme/vib").kind == "model_status"
    assert subscription("alerts", prefix="acme/vib") == "acme/vib/+/+/alerts"
    # A topic under another prefix is refused, naming the prefix that was expected.
    with pytest.raises(ProtocolError, match="acme/vib/") as ei:
        parse_topic(Topics("s1", "gw").alerts, prefix="acme/vib")
    assert ei.value.reason == "bad_topic"
    assert _reason(parse_topic, t.alerts) == "bad_topic"  # the default prefix stays edgevib/v1
    for bad in ("", "a/", "/a", "a//b", "a/+", "#", "a b"):
        with pytest.raises(ProtocolError, match="prefix"):
            Topics("s", "g", prefix=bad)
