"""Plant overview, per-asset history and the envelope waterfall (cloud/web/plant.py, sensor_data.waterfall) through the API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store
from edgevib.cloud.web.dashboard import create_app
from edgevib.models.bearing import CWRU_DE_6205
from starlette.testclient import TestClient

from edgevib import protocol as proto
from edgevib.protocol.evidence import EvidenceRecord
from edgevib.protocol.evidence import encode as encode_evidence
from tests.cloud.test_dashboard import outer_race_window

TOKEN = "t0ken-for-plant-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = int(time.time() * 1000) - 120_000  # recent: the overview reads the last hour of raw indicators


def ind(site: str, gw: str, sensor: str, t: int, vel: float, zone: str) -> dict[str, Any]:
    return {"id": f"{site}{gw}{sensor}{t}", "site": site, "gateway": gw, "sensor": sensor, "asset": f"{site}/{gw}/{sensor}",
            "t_ms": t, "recv_ms": t, "vel_rms_mm_s": vel, "iso_zone": zone, "iso_group": 2, "iso_foundation": "rigid"}


def alert(aid: str, site: str, gw: str, sensor: str, t: int, state: str = "raised", severity: str = "critical") -> dict[str, Any]:
    return {"id": aid, "site": site, "gateway": gw, "sensor": sensor, "asset": f"{site}/{gw}/{sensor}", "akind": "fault",
            "state": state, "cls": "OR021", "severity": severity, "probability": 0.9, "ev_ms": t, "recv_ms": t, "late": 0}


def level(site: str, gw: str, sensor: str, t: int, kind: str, lv: str, value: float) -> dict[str, Any]:
    return {"id": f"{site}/{gw}/{sensor}:{t}:{kind}:{lv}", "site": site, "gateway": gw, "sensor": sensor,
            "asset": f"{site}/{gw}/{sensor}", "ts_ms": t, "kind": kind, "level": lv, "previous": "normal", "value": value,
            "threshold": 2.8, "mode": "iso", "figure": "vel_rms_mm_s", "detail": json.dumps({"warning": 2.8, "alarm": 4.5})}


def seed(s: Store, T0: int = T0) -> None:  # noqa: N803 - the module's T0 unless given
    """Plant p: g1 online with fan (zone A), pump (warning level, zone C), motor (open critical alert);
    g2 offline with one sensor in zone B; plant q: one sensor in zone D."""
    for site, gw, sensor, vel, zone in (("p", "g1", "fan", 1.0, "A"), ("p", "g1", "pump", 3.1, "C"),
                                        ("p", "g1", "motor", 1.2, "A"), ("p", "g2", "gear", 2.0, "B"),
                                        ("q", "g9", "mill", 5.0, "D")):
        s.apply("indicator", ind(site, gw, sensor, T0 - 60_000, 0.5, "A"))
        s.apply("indicator", ind(site, gw, sensor, T0, vel, zone))
    s.apply("level_event", level("p", "g1", "pump", T0 - 30_000, "raised", "warning", 3.0))
    s.apply("level_event", level("p", "g1", "fan", T0 - 50_000, "raised", "warning", 3.0))
    s.apply("level_event", level("p", "g1", "fan", T0 - 20_000, "cleared", "normal", 2.0))
    s.apply("alert", alert("a-motor", "p", "g1", "motor", T0 - 5000))
    s.apply("alert", alert("a-pump-old", "p", "g1", "pump", T0 - 90_000, severity="warning"))
    s.apply("alert", alert("a-pump-clr", "p", "g1", "pump", T0 - 80_000, state="cleared", severity="warning"))
    s.apply("alert_note", {"id": "n1", "alert_id": "a-pump-old", "noted_by": "ana", "noted_ms": T0 - 85_000,
                           "note": "greased the bearing"})
    s.apply("alert_ack", {"alert_id": "a-pump-old", "acked_by": "bo", "acked_ms": T0 - 86_000, "note": ""})
    s.apply("gateway", {"site": "p", "gateway": "g1", "status": "online"})
    s.apply("gateway", {"site": "p", "gateway": "g2", "status": "offline"})
    body = {"type": "model_changed", "model_name": "faulttype", "model_version": "3", "model_sha256": "cd" * 32}
    s.apply("fleet_event", {"id": "mc1", "type": "model_changed", "site": "p", "gateway": "g1", "asset": None,
                            "ts_ms": T0 - 70_000, "body": json.dumps(body)})
    s.apply("fleet_event", {"id": "mc2", "type": "model_changed", "site": "p", "gateway": "g2", "asset": None,
                            "ts_ms": T0 - 70_000, "body": json.dumps(body)})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Store, Path]]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    seed(s)
    (tmp_path / "dataset").mkdir()
    app = create_app(url, TOKEN, evidence_dir=tmp_path / "dataset")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, s, tmp_path / "dataset"
    app.state.dashboard.close()
    s.close()


def test_plant_overview_colours_each_tile_by_its_worst_state_and_sorts_by_criticality(
        client: tuple[TestClient, Store, Path]) -> None:
    c, _, _ = client
    assert c.get("/api/plant").status_code == 401
    p = c.get("/api/plant", headers=AUTH).json()
    tiles = {t["asset"]: t for s in p["sites"] for g in s["gateways"] for t in g["sensors"]}
    state = {a: t["state"] for a, t in tiles.items()}
    assert state == {"p/g1/fan": "good", "p/g1/pump": "warning", "p/g1/motor": "alarm", "p/g2/gear": "offline",
                     "q/g9/mill": "alarm"}
    assert tiles["p/g1/motor"]["why"] == "open critical alert OR021"
    assert tiles["p/g1/pump"]["open_alert"] is None  # its newest alert was cleared
    assert tiles["p/g1/fan"]["level"] == "normal"  # the warning cleared
    assert [t["sensor"] for t in p["sites"][0]["gateways"][0]["sensors"]] == ["motor", "pump", "fan"]
    assert p["counts"] == {"good": 1, "watch": 0, "warning": 1, "offline": 1, "alarm": 2}
    # plant p holds an alarm, so does q: same rank, then by name; inside p, g1 (alarm) before g2 (offline)
    assert [s["site"] for s in p["sites"]] == ["p", "q"] and [g["gateway"] for g in p["sites"][0]["gateways"]] == ["g1", "g2"]


def test_a_sensor_silent_for_an_hour_is_offline(client: tuple[TestClient, Store, Path]) -> None:
    c, s, _ = client
    s.apply("indicator_rollup", {"site": "q", "gateway": "g9", "sensor": "old", "asset": "q/g9/old", "resolution_s": 3600,
                                 "window_start": T0 - 5 * 3_600_000, "window_end": T0 - 4 * 3_600_000, "n": 360})
    s.apply("indicator", ind("q", "g9", "old", T0 - 2 * 3_600_000, 1.0, "A"))
    tiles = {t["asset"]: t for site in c.get("/api/plant", headers=AUTH).json()["sites"] for g in site["gateways"]
             for t in g["sensors"]}
    assert tiles["q/g9/old"]["state"] == "offline" and tiles["q/g9/old"]["why"] == "no indicators for 60 min"
    assert tiles["q/g9/mill"]["state"] == "alarm"

    # the sensor lists (trends, waterfall) hold sensors known only by their indicators' rollups too: of the last
    # hour (1-min) or of the last 7 days (hourly, the silent one), besides alerts, evidence and level crossings
    s.apply("indicator_rollup", {"site": "p", "gateway": "g2", "sensor": "gear", "asset": "p/g2/gear", "resolution_s": 60,
                                 "window_start": T0 - 60_000, "window_end": T0, "n": 6})
    listed = {f"{x['site']}/{x['gateway']}/{x['sensor']}" for x in c.get("/api/sensors", headers=AUTH).json()["sensors"]}
    assert {"p/g2/gear", "q/g9/old", "p/g1/motor", "p/g1/fan"} <= listed and "q/g9/mill" not in listed


def test_asset_history_merges_alerts_notes_levels_and_model_changes(client: tuple[TestClient, Store, Path]) -> None:
    c, _, _ = client
    h = c.get("/api/history", params={"site": "p", "gateway": "g1", "sensor": "pump"}, headers=AUTH).json()
    got = [(x["t_ms"] - T0, x["what"], x["by"]) for x in h["items"]]
    assert got == [(-30_000, "level raised", "cloud"), (-70_000, "model changed", "fleet"),
                   (-80_000, "alert cleared", "edge"), (-85_000, "note", "ana"), (-86_000, "ack", "bo"),
                   (-90_000, "alert raised", "edge")]
    texts = {x["what"]: x["text"] for x in h["items"]}
    assert texts["note"] == "greased the bearing" and texts["model changed"].startswith("faulttype 3")
    assert texts["level raised"] == "warning (iso levels): 3.00 mm/s"
    assert next(x for x in h["items"] if x["what"] == "note")["alert_id"] == "a-pump-old"
    # another asset's notes and the other gateway's model change stay out
    h2 = c.get("/api/history", params={"site": "p", "gateway": "g1", "sensor": "motor"}, headers=AUTH).json()
    assert [x["what"] for x in h2["items"]] == ["alert raised", "model changed"]
    assert c.get("/api/history", params={"site": "p", "gateway": "g1"}, headers=AUTH).status_code == 400
    assert len(c.get("/api/history", params={"site": "p", "gateway": "g1", "sensor": "pump", "limit": 2},
                     headers=AUTH).json()["items"]) == 2


def test_trends_carry_the_level_events_and_the_levels_in_force(client: tuple[TestClient, Store, Path]) -> None:
    c, _, _ = client
    d = c.get("/api/trends", params={"site": "p", "gateway": "g1", "sensor": "fan", "since_ms": T0 - 3_600_000,
                                     "until_ms": T0}, headers=AUTH).json()
    assert [(e["kind"], e["level"]) for e in d["level_events"]] == [("raised", "warning"), ("cleared", "normal")]
    assert d["levels"] == {"mode": "iso", "warning": 2.8, "alarm": 4.5, "baseline": None}
    assert d["model_changes"] == [{"t_ms": T0 - 70_000, "model_name": "faulttype", "model_version": "3"}]


def test_waterfall_rows_are_envelope_spectra_of_the_stored_windows_oldest_first(client: tuple[TestClient, Store, Path]) -> None:
    c, s, dataset = client
    q = {"site": "p", "gateway": "g1", "sensor": "pump"}
    empty = c.get("/api/waterfall", params=q, headers=AUTH).json()
    assert empty["rows"] == [] and empty["f"] == []
    es = EvidenceStore(s, dataset)
    rng = np.random.default_rng(1)
    for k in range(5):  # the fault grows: noise only, then bursts at BPFO
        x = outer_race_window(rng, 12000.0, 1750.0) if k >= 2 else 0.3 * rng.normal(size=12000)
        rec = EvidenceRecord.build(site="p", gateway="g1", sensor="pump", t_ns=(T0 + k * 60_000) * 1_000_000, rpm=1750.0,
                                   sample_rate=12000.0, reason="healthy_sample", alert_id=None, probs={"normal": 0.9, "OR021": 0.1},
                                   model={"name": "m", "version": "1", "sha256": "ab" * 32}, window=x)
        assert es.put(encode_evidence(rec), proto.Topics("p", "g1").evidence) is not None
    w = c.get("/api/waterfall", params={**q, "rows": 4}, headers=AUTH).json()
    assert [r["t_ms"] - T0 for r in w["rows"]] == [60_000, 120_000, 180_000, 240_000]
    f = np.asarray(w["f"])
    bpfo = CWRU_DE_6205.frequencies(1750.0).bpfo
    assert w["markers"]["BPFO"] == pytest.approx(bpfo) and f[-1] == pytest.approx(4 * w["markers"]["BPFI"])
    near = np.abs(f - bpfo) < 2.0
    peak = [max(np.asarray(r["a"])[near]) / np.median(r["a"]) for r in w["rows"]]
    assert peak[0] < 3 and min(peak[1:]) > 5 * peak[0], peak  # the BPFO line appears when the fault does
    assert c.get("/api/waterfall", params={**q, "rows": 0}, headers=AUTH).status_code == 400
    assert c.get("/api/waterfall", params={**q, "rows": "x"}, headers=AUTH).status_code == 400


def test_alert_page_shows_the_newest_window_that_agrees_with_the_alert(client: tuple[TestClient, Store, Path]) -> None:
    """The K windows behind an alert, oldest first, may start with one the model called normal."""
    c, s, dataset = client
    es = EvidenceStore(s, dataset)
    rng = np.random.default_rng(4)
    for k, probs in enumerate(({"normal": 0.9, "OR021": 0.1}, {"OR021": 0.8, "normal": 0.2},
                               {"OR021": 0.95, "normal": 0.05}, {"normal": 0.6, "OR021": 0.4})):
        rec = EvidenceRecord.build(site="p", gateway="g1", sensor="motor", t_ns=(T0 - 5000 - (4 - k) * 700) * 1_000_000,
                                   rpm=1750.0, sample_rate=12000.0, reason="alert", alert_id="a-motor", probs=probs,
                                   model={"name": "m", "version": "1", "sha256": "ab" * 32},
                                   window=outer_race_window(rng, 12000.0, 1750.0))
        assert es.put(encode_evidence(rec), proto.Topics("p", "g1").evidence) is not None
    v = c.get("/api/alerts/a-motor/detail", headers=AUTH).json()["view"]
    assert v["for_alert"] and v["pred_cls"] == "OR021" and v["probability"] == 0.95
