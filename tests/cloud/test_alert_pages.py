"""The dashboard's alert detail, notes and sensor trends (cloud/web/alert_view.py) through the API, and the vendored chart library."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgevib.cloud.ingest.records import normalize
from edgevib.cloud.store import Store
from edgevib.cloud.web.alert_view import NOTE_MAX
from edgevib.cloud.web.dashboard import create_app
from starlette.testclient import TestClient

from edgevib.protocol import ISO_BOUNDARIES, dumps, make_alert

TOKEN = "t0ken-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000_000  # ms
EVIDENCE = {"physics": "OR", "band_hz": [2000.0, 5000.0], "band_kurtosis": 3.1, "scores_db": {"OR": 14.2, "IR": 3.0, "B": 1.1},
            "peaks": {"bpfo": [107.5, 18.2], "bpfo2": [215.0, 12.0]}}


def stored_alert(store: Store, *, t_ms: int, verdict: dict[str, Any] | None, cls: str = "OR021") -> str:
    """An alert as the edge sends it, through the cloud's ingest, into the store (the job's alert batch row)."""
    a = make_alert(site="p1", gateway="g1", sensor="de", kind="fault", state="raised", t_ns=t_ms * 1_000_000, cls=cls,
                   probability=0.91, physics="OR", agree=True, evidence=EVIDENCE,
                   model={"name": "cnn", "version": "1", "sha256": "ab" * 32})
    if verdict is not None:
        a["verdict"] = verdict
    rec = normalize("edgevib/v1/p1/g1/alerts", dumps(a), recv_ms=t_ms + 100, mid=f"m{t_ms}")
    assert rec["kind"] == "alert", rec
    store.apply("alert", {**rec, "late": 0})
    return str(rec["id"])


def indicator(t_ms: int, vel: float, *, zone: str = "B") -> dict[str, Any]:
    return {"id": f"ind{t_ms}", "site": "p1", "gateway": "g1", "sensor": "de", "asset": "p1/g1/de", "t_ms": t_ms,
            "recv_ms": t_ms, "acc_rms_g": vel / 10, "acc_peak_g": vel / 3, "crest": 3.0, "kurtosis": 3.2,
            "vel_rms_mm_s": vel, "iso_zone": zone, "iso_group": 1, "iso_foundation": "flexible"}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, Store, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    ids = {"fused": stored_alert(s, t_ms=T0, verdict={"fault_type": "OR", "confidence": 0.87,
                                                      "carried_by": ["model", "physics"], "model": "OR", "physics": "OR"}),
           "old": stored_alert(s, t_ms=T0 + 5000, verdict=None, cls="IR014")}
    for k in range(-90, 91, 10):  # every 10 min over +-1.5 h
        s.apply("indicator", indicator(T0 + k * 60_000, 2.0 + k / 100))
    app = create_app(url, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, s, ids
    app.state.dashboard.close()
    s.close()


def test_ingest_keeps_the_verdict_and_the_detail_page_shows_it(setup: tuple[TestClient, Store, dict[str, str]]) -> None:
    c, s, ids = setup
    assert s.query("SELECT verdict, verdict_confidence FROM alerts WHERE id = ?", (ids["fused"],)) == [("OR", 0.87)]
    d = c.get(f"/api/alerts/{ids['fused']}/detail", headers=AUTH).json()
    assert d["verdict"]["fault_type"] == "OR" and d["verdict"]["confidence"] == 0.87 and d["verdict"]["fused"]
    assert d["verdict"]["carried_by"] == ["model", "physics"] and d["verdict"]["agree"] is True
    assert d["physics_evidence"]["scores_db"]["OR"] == 14.2 and d["physics_evidence"]["peaks"]["bpfo"] == [107.5, 18.2]
    assert d["class_probabilities"] == {"OR021": 0.91}
    # the trend is the sensor's velocity RMS within +-1 h of the alert, nothing outside
    ts = [r["t_ms"] for r in d["trend"]]
    assert ts and min(ts) == T0 - 3_600_000 and max(ts) == T0 + 3_600_000 and len(ts) == 13
    assert d["view"] is None  # no evidence directory: the page says so instead of drawing
    old = c.get(f"/api/alerts/{ids['old']}/detail", headers=AUTH).json()
    assert old["verdict"]["fault_type"] == "IR" and old["verdict"]["confidence"] is None and not old["verdict"]["fused"]
    assert c.get("/api/alerts/nosuchalert/detail", headers=AUTH).status_code == 404
    assert c.get(f"/api/alerts/{ids['fused']}/detail", params={"geometry": "nope"}, headers=AUTH).status_code == 400


def test_note_is_validated_stored_and_shown_in_the_history(setup: tuple[TestClient, Store, dict[str, str]]) -> None:
    c, s, ids = setup
    url = f"/api/alerts/{ids['fused']}/note"
    assert c.post(url, json={"note": "x"}).status_code == 401  # no token
    for bad in ({}, {"note": ""}, {"note": "   "}, {"note": 42}, {"note": "x" * (NOTE_MAX + 1)},
                {"note": "ok", "by": ""}, {"note": "ok", "by": 7}, {"note": "bell \x07"}):
        r = c.post(url, json=bad, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"], bad
    assert c.post(url, content=b"{not json", headers=AUTH).status_code == 400
    assert c.post(url, json=["note"], headers=AUTH).status_code == 400
    assert c.post("/api/alerts/nosuchalert/note", json={"note": "x"}, headers=AUTH).status_code == 404
    assert s.query("SELECT COUNT(*) FROM alert_notes") == [(0,)]
    r = c.post(url, json={"note": "outer race spall seen with the\nstethoscope", "by": "ana"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["noted_by"] == "ana"
    c.post(url, json={"note": "x" * NOTE_MAX}, headers=AUTH).raise_for_status()  # the limit itself is fine
    c.post(f"/api/alerts/{ids['fused']}/ack", json={"by": "bo"}, headers=AUTH).raise_for_status()
    assert s.query("SELECT noted_by, note FROM alert_notes WHERE alert_id = ? AND noted_by = 'ana'", (ids["fused"],)) == [
        ("ana", "outer race spall seen with the\nstethoscope")]
    hist = c.get(f"/api/alerts/{ids['fused']}/detail", headers=AUTH).json()["history"]
    assert [h["what"] for h in hist][0] == "raised"
    assert {"what": "note", "by": "ana"}.items() <= next(h for h in hist if h["by"] == "ana").items()
    assert any(h["what"] == "ack" and h["by"] == "bo" for h in hist)
    assert len([h for h in hist if h["what"] == "note"]) == 2


def test_trends_use_rollups_fall_back_to_raw_and_draw_the_iso_zones(setup: tuple[TestClient, Store, dict[str, str]]) -> None:
    c, s, ids = setup
    q = {"site": "p1", "gateway": "g1", "sensor": "de"}
    raw = c.get("/api/trends", params={**q, "since_ms": T0 - 7_200_000, "until_ms": T0 + 7_200_000}, headers=AUTH).json()
    assert raw["resolution"] == "raw" and len(raw["series"]) == 19
    assert raw["iso"]["group"] == 1 and raw["iso"]["foundation"] == "flexible"
    assert tuple(raw["iso"]["zones"].values()) == ISO_BOUNDARIES[(1, "flexible")]
    assert [a["id"] for a in raw["alerts"]] == [ids["fused"], ids["old"]] and raw["alerts"][0]["verdict"] == "OR"
    # a day: 1-min rollups; none yet -> raw rows, and it says so
    day = {**q, "since_ms": T0 - 43_200_000, "until_ms": T0 + 43_200_000}
    fb = c.get("/api/trends", params=day, headers=AUTH).json()
    assert fb["requested"] == "60" and fb["resolution"] == "raw" and len(fb["series"]) == 19
    for k in range(3):
        s.apply("indicator_rollup", {"site": "p1", "gateway": "g1", "sensor": "de", "asset": "p1/g1/de", "resolution_s": 60,
                                     "window_start": T0 + k * 60_000, "window_end": T0 + (k + 1) * 60_000, "n": 6,
                                     "vel_min": 1.0, "vel_mean": 2.0 + k, "vel_max": 3.0 + k, "acc_rms_min": 0.1,
                                     "acc_rms_mean": 0.2, "acc_rms_max": 0.3, "kurtosis_min": 3, "kurtosis_mean": 3.1,
                                     "kurtosis_max": 3.3, "worst_zone": "C"})
    ru = c.get("/api/trends", params=day, headers=AUTH).json()
    assert ru["resolution"] == "60" and [p["vel"] for p in ru["series"]] == [2.0, 3.0, 4.0]
    assert ru["series"][2]["vel_max"] == 5.0 and ru["series"][0]["zone"] == "C"
    assert c.get("/api/trends", params={**q, "resolution": "3600", **day}, headers=AUTH).json()["resolution"] == "raw"
    for bad in ({"site": "p1"}, {**q, "since_ms": "yesterday"}, {**q, "since_ms": T0, "until_ms": T0 - 1},
                {**q, "resolution": "7"}):
        r = c.get("/api/trends", params=bad, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"], bad
    assert c.get("/api/trends", params=q).status_code == 401


def test_the_chart_library_is_vendored_and_served_only_with_the_token(setup: tuple[TestClient, Store, dict[str, str]]) -> None:
    c = setup[0]
    vendor = Path(__file__).resolve().parents[2] / "cloud" / "web" / "static" / "vendor"
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()
    assert c.get("/static/vendor/uPlot.iife.min.js").status_code == 401
    r = c.get("/static/vendor/uPlot.iife.min.js", headers=AUTH)
    assert r.status_code == 200 and "uPlot" in r.text
    page = c.get("/", headers=AUTH).text
    assert "/static/vendor/uPlot.iife.min.js" in page and "/static/vendor/uPlot.min.css" in page


def test_an_older_store_gains_the_verdict_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    s = Store(f"sqlite:///{path}")
    s.close()
    con = sqlite3.connect(path)  # as written before the verdict: alerts without the three columns
    for col in ("verdict", "verdict_confidence", "detail"):
        con.execute(f"ALTER TABLE alerts DROP COLUMN {col}")
    con.execute("INSERT INTO alerts (id, cls, state) VALUES ('old1', 'OR007', 'raised')")
    con.commit()
    con.close()
    s = Store(f"sqlite:///{path}")
    try:
        assert s.query("SELECT id, verdict, verdict_confidence, detail FROM alerts") == [("old1", None, None, None)]
        stored_alert(s, t_ms=T0, verdict={"fault_type": "unknown", "confidence": 0.6, "carried_by": ["anomaly"]})
        assert ("unknown", 0.6) in s.query("SELECT verdict, verdict_confidence FROM alerts")
    finally:
        s.close()


def test_auto_resolution_never_truncates_a_span() -> None:
    """Each automatic resolution fits its whole span in one page of points."""
    from edgevib.cloud.web.alert_view import MAX_TREND_POINTS, MINUTE_MAX_SPAN_MS, RAW_MAX_SPAN_MS

    assert RAW_MAX_SPAN_MS / 10_000 <= MAX_TREND_POINTS  # raw indicators every 10 s (the default interval)
    assert MINUTE_MAX_SPAN_MS / 60_000 <= MAX_TREND_POINTS  # 1-min rollups
