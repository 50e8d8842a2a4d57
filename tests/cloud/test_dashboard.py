"""The dashboard app: token on every route (SSE and API included), filters, ack, label, sensor view."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from edgevib.cloud.config import DashboardConfig, load_config
from edgevib.cloud.store import Store
from edgevib.cloud.web import sensor_data
from edgevib.cloud.web.dashboard import create_app, free_port, new_token, serve
from edgevib.cloud.web.heartbeats import HeartbeatWatch
from edgevib.cloud.web.spectra import sensor_view
from edgevib.models.bearing import CWRU_DE_6205, DG_6308
from edgevib.models.registry import Registry, keygen
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from edgevib.errors import ConfigError

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
TOKEN = "t0ken-for-tests-0123456789"


def alert(i: int, *, site: str = "p1", sensor: str = "de", cls: str = "IR007") -> dict[str, Any]:
    return {"id": f"alert{i:04d}xyz", "site": site, "gateway": "g1", "sensor": sensor, "asset": f"{site}/g1/{sensor}",
            "akind": "fault", "state": "raised", "cls": cls, "severity": "info", "probability": 0.8 + i / 100,
            "ev_ms": 1_700_000_000_000 + i * 1000, "recv_ms": 1_700_000_000_000 + i * 1000, "late": 0,
            "model_name": "cnn_small", "model_version": "1", "mid": f"m{i}"}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    for i, (site, sensor, cls) in enumerate([("p1", "de", "IR007"), ("p2", "fe", "OR021"), ("p1", "de", "B014")], 1):
        s.apply("alert", alert(i, site=site, sensor=sensor, cls=cls))
    s.apply("gateway", {"site": "p1", "gateway": "g1", "status": "online", "last_hb_ms": 1_700_000_000_000,
                        "model_name": "cnn_small", "model_version": "1", "outbox_pending": 3, "drops_total": 0})
    s.close()
    return url


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    app = create_app(store_url, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    app.state.dashboard.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_defaults_bind_localhost_and_token_comes_from_env() -> None:
    assert DashboardConfig().host == "127.0.0.1"
    assert load_config(None, env={}).dashboard.host == "127.0.0.1"
    assert load_config(None, env={"EDGEVIB_DASHBOARD__TOKEN": TOKEN}).dashboard.token == TOKEN
    with pytest.raises(ConfigError):
        DashboardConfig(token="short")
    assert len(new_token()) >= 32 and new_token() != new_token()


def test_every_route_refuses_missing_and_bad_tokens(client: TestClient) -> None:
    app = client.app
    paths: list[tuple[str, str]] = []
    for r in app.routes:  # type: ignore[attr-defined]
        if isinstance(r, Route):
            paths += [(m, r.path.replace("{id}", "alert0001xyz")) for m in (r.methods or {"GET"}) if m != "HEAD"]
        elif isinstance(r, Mount):
            paths.append(("GET", r.path + "/app.js"))
    assert ("GET", "/api/alerts/stream") in paths and ("POST", "/api/models/push") in paths and len(paths) >= 12
    for method, path in paths:
        assert client.request(method, path).status_code == 401, path
        assert client.request(method, path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401, path
        assert client.request(method, path, cookies={"edgevib_dashboard": TOKEN[:-1] + "x"}).status_code == 401, path
    assert client.get("/login", params={"token": "nope"}).status_code == 401
    assert client.get("/api/alerts", headers=AUTH).status_code == 200
    assert client.get("/static/app.js", headers=AUTH).status_code == 200


def test_login_sets_a_cookie_that_opens_the_page(client: TestClient) -> None:
    r = client.get("/login", params={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    page = client.get("/")  # the client keeps the cookie
    assert page.status_code == 200 and "EventSource" not in page.text and "/static/app.js" in page.text
    assert client.get("/api/fleet").json()["gateways"][0]["outbox_pending"] == 3


def test_alert_filters(client: TestClient) -> None:
    ids = lambda **q: [a["id"] for a in client.get("/api/alerts", params=q, headers=AUTH).json()["alerts"]]  # noqa: E731
    assert ids() == ["alert0001xyz", "alert0002xyz", "alert0003xyz"]
    assert ids(site="p2") == ["alert0002xyz"]
    assert ids(cls="IR") == ["alert0001xyz"]
    assert ids(asset="p1/g1/de", cls="B") == ["alert0003xyz"]
    assert ids(site="nowhere") == []


def test_ack_is_stored_and_unknown_alert_is_404(client: TestClient, store_url: str) -> None:
    r = client.post("/api/alerts/alert0002xyz/ack", headers=AUTH, json={"by": "ana"})
    assert r.status_code == 200 and r.json()["acked_by"] == "ana"
    s = Store(store_url)
    assert s.query("SELECT acked_by FROM alert_acks WHERE alert_id = 'alert0002xyz'") == [("ana",)]
    s.close()
    assert client.post("/api/alerts/nosuchalert/ack", headers=AUTH).status_code == 404


def test_label_goes_through_the_labels_module(client: TestClient, store_url: str) -> None:
    r = client.post("/api/alerts/alert0001xyz/label", headers=AUTH, json={"cls": "IR014", "by": "ana"})
    assert client.post("/api/alerts/alert0001xyz/label", headers=AUTH, json={}).status_code == 400
    try:
        import edgevib.cloud.learning.labels  # noqa: F401
    except ModuleNotFoundError:
        assert r.status_code == 409 and "labelling needs" in r.json()["error"]
        return
    assert r.status_code == 200, r.text
    s = Store(store_url)
    assert s.query("SELECT cls FROM labels WHERE alert_id = 'alert0001xyz'") == [("IR014",)]
    s.close()


def outer_race_window(rng: np.random.Generator, fs: float, rpm: float, seconds: float = 1.0) -> np.ndarray:
    """Decaying 3 kHz bursts at BPFO (a spall on the outer race) in white noise."""
    n = int(fs * seconds)
    bpfo = CWRU_DE_6205.frequencies(rpm).bpfo
    x = 0.3 * rng.normal(size=n)
    t = np.arange(int(0.01 * fs)) / fs
    burst = np.exp(-t * 800) * np.sin(2 * np.pi * 3000 * t)
    for k in range(int(seconds * bpfo)):
        i = int(k / bpfo * fs)
        x[i:i + len(burst)] += burst[: n - i]
    return x


def test_sensor_view_markers_and_envelope_peak_at_bpfo(rng: np.random.Generator) -> None:
    fs, rpm = 12000.0, 1750.0
    v = sensor_view(outer_race_window(rng, fs, rpm), fs, rpm, CWRU_DE_6205)
    f = CWRU_DE_6205.frequencies(rpm)
    assert v["markers"] == pytest.approx({"shaft": rpm / 60, "BPFO": f.bpfo, "BPFI": f.bpfi, "BSF": f.bsf, "FTF": f.ftf})
    assert v["markers"]["BPFO"] == pytest.approx(3.5848 * rpm / 60, rel=1e-4)
    ef, ea = np.array(v["envelope"]["f"]), np.array(v["envelope"]["a"])
    band = (ef > 20) & (ef < 400)
    assert abs(ef[band][np.argmax(ea[band])] - f.bpfo) < 1.0  # the strongest envelope line is BPFO
    assert v["physics"] == "OR"
    assert len(v["spectrum"]["f"]) <= 1500 and len(v["waveform"]["x"]) <= 1500
    other = sensor_view(outer_race_window(rng, fs, rpm), fs, rpm, DG_6308)["markers"]
    assert other["BPFO"] == pytest.approx(DG_6308.frequencies(rpm).bpfo)


def test_sensor_api_serves_the_newest_window_and_probabilities(client: TestClient, rng: np.random.Generator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    win = {"window": outer_race_window(rng, 12000.0, 1797.0, 0.5), "sample_rate": 12000.0, "rpm": 1797.0,
           "t_ms": 1_700_000_000_500, "probs": {"OR021": 0.7, "normal": 0.3}, "pred_cls": "OR021", "probability": 0.7,
           "reason": "alert", "alert_id": None}
    seen: list[tuple[str, str, str]] = []

    def fake(store: Store, site: str, gateway: str, sensor: str, limit: int = 20, evidence_dir: Path | None = None) -> list[dict[str, Any]]:
        seen.append((site, gateway, sensor))
        return [win]

    monkeypatch.setattr(sensor_data, "recent_windows", fake)
    r = client.get("/api/sensor", params={"site": "p1", "gateway": "g1", "sensor": "de"}, headers=AUTH)
    assert r.status_code == 200, r.text
    d = r.json()
    assert seen == [("p1", "g1", "de")]
    assert d["view"]["markers"]["BPFO"] == pytest.approx(CWRU_DE_6205.frequencies(1797.0).bpfo)
    sources = [p["source"] for p in d["probabilities"]]
    assert sources.count("alert raised") == 2 and "evidence" in sources  # both p1/g1/de alerts and the window
    assert client.get("/api/sensor", params={"site": "p1", "gateway": "g1", "sensor": "de", "geometry": "x"},
                      headers=AUTH).status_code == 400
    assert {"site": "p2", "gateway": "g1", "sensor": "fe"} in client.get("/api/sensors", headers=AUTH).json()["sensors"]


def test_models_page_lists_the_registry_and_push_needs_a_broker(store_url: str, tmp_path: Path) -> None:
    priv, _pub = keygen(tmp_path / "keys")
    reg = Registry(tmp_path / "reg", private_key=priv)
    m = reg.add(ZOO / "cnn_small.onnx", version="7", metrics={"accuracy": 0.97})
    app = create_app(store_url, TOKEN, registry_dir=tmp_path / "reg")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        page = c.get("/api/models", headers=AUTH).json()
        assert [(v["name"], v["version"], v["metrics"]["accuracy"]) for v in page["registry"]] == [("cnn_small", "7", 0.97)]
        assert page["registry"][0]["sha256"] == m.sha256 and page["can_push"] is False and page["rollouts"] == []
        assert page["retrains"] == []
        r = c.post("/api/models/push", headers=AUTH, json={"name": "cnn_small", "version": "7", "targets": ["p1/g1"]})
        assert r.status_code == 400 and "broker" in r.json()["error"]
        r = c.post("/api/models/push", headers=AUTH, json={"name": "cnn_small", "version": "8", "targets": ["p1/g1"]})
        assert r.status_code == 400 and "no cnn_small v8" in r.json()["error"]
        r = c.post("/api/models/rollback", headers=AUTH, json={"targets": ["p1-without-gateway"]})
        assert r.status_code == 400 and "site/gateway" in r.json()["error"]
    app.state.dashboard.close()
    # the gate's decisions: a trigger from the job and the worker's run of it
    st = Store(store_url)
    st.upsert("retrain_triggers", [{"id": "retrain:nsae-lcn:1", "reason": "labels", "model_name": "nsae-lcn",
                                    "site": "p1", "gateway": "g1", "n_windows": 40, "ts_ms": 5, "detail": "{}"},
                                   {"id": "drift:p1/g2:9", "reason": "drift", "model_name": "nsae-lcn",
                                    "site": "p1", "gateway": "g2", "n_windows": 0, "ts_ms": 9, "detail": "{}"}])
    st.upsert("retrain_runs", [{"trigger_id": "retrain:nsae-lcn:1", "status": "promoted", "started_ms": 6,
                                "model_version": "2", "decision": "promoted: held-out 99.3 -> 99.1 %"}])
    st.close()
    app = create_app(store_url, TOKEN, registry_dir=tmp_path / "reg")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        rt = c.get("/api/models", headers=AUTH).json()["retrains"]
        assert [(t["id"], (t["run"] or {}).get("status")) for t in rt] == [("drift:p1/g2:9", None),
                                                                           ("retrain:nsae-lcn:1", "promoted")]
        assert rt[1]["run"]["decision"].startswith("promoted: held-out")
    app.state.dashboard.close()
    app = create_app(store_url, TOKEN, registry_dir=tmp_path / "nothing-here")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        page = c.get("/api/models", headers=AUTH).json()
        assert page["registry"] is None and "no model registry" in page["registry_note"]
    app.state.dashboard.close()


def test_heartbeat_watch_computes_throughput_between_beats() -> None:
    w = HeartbeatWatch.__new__(HeartbeatWatch)
    w._last, w._lock = {}, threading.Lock()
    hb = {"site": "s", "gateway": "g", "t_ns": 10 * 10**9, "counters": {"windows": 100, "latency_p99_ms": 7.5},
          "resources": {"rss_mb": 150.0}, "sensors": {"a": {}, "b": {}}}
    w.update(hb, 0.0)
    w.update({**hb, "t_ns": 15 * 10**9, "counters": {"windows": 150, "latency_p99_ms": 8.0}}, 5.0)
    s = w.snapshot()["s/g"]
    assert s["windows_per_s"] == 10.0 and s["latency_p99_ms"] == 8.0 and s["sensors"] == 2


def test_heartbeat_watch_uses_the_protocol_parser_and_counts_what_it_skips(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from edgevib.edge.memory import MemoryBus, MemoryLink

    from edgevib.protocol import Topics, dumps, make_heartbeat

    bus = MemoryBus()
    watch = HeartbeatWatch("mqtt://unused:1", link=MemoryLink(bus, "dashboard"))
    tx = MemoryLink(bus, "gw")
    topic = Topics("p1", "g1").heartbeat
    good = make_heartbeat(site="p1", gateway="g1", t_ns=10 * 10**9, uptime_s=3.0, counters={"windows": 100})
    # Each of these passed json.loads (two crashed update() or the page; the rest were shown as live).
    bad = [b"{not json", b"[1, 2]", json.dumps({**good, "schema": "x"}).encode(),
           json.dumps({**good, "counters": {"windows": "many"}}).encode(),  # a string where a number goes
           json.dumps({**good, "sensors": None}).encode(), json.dumps({**good, "gateway": "g2"}).encode()]
    with caplog.at_level("WARNING", logger="edgevib.cloud.web.heartbeats"):
        for p in bad:
            tx.publish(topic, p)
        tx.publish(topic, dumps(good))
        deadline = time.monotonic() + 5
        while "p1/g1" not in watch.snapshot() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert watch.snapshot()["p1/g1"]["windows"] == 100 and list(watch.snapshot()) == ["p1/g1"]
    assert watch.rejected == {"bad_json": 2, "bad_schema": 1, "bad_field": 3}
    assert any("heartbeat on edgevib/v1/p1/g1/heartbeat skipped (bad_json, 1 so far)" in r.getMessage() for r in caplog.records)
    app = create_app(store_url, TOKEN)
    app.state.dashboard.beats = watch
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/fleet", headers=AUTH)
        assert r.status_code == 200 and r.json()["live_rejected"] == {"bad_field": 3, "bad_json": 2, "bad_schema": 1}
    app.state.dashboard.close()


def test_live_stream_over_a_real_server_pushes_a_new_alert(store_url: str) -> None:
    app = create_app(store_url, TOKEN, poll_s=0.1)
    port = free_port()
    server = serve(app, "127.0.0.1", port)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/alerts/stream", timeout=5).status_code == 401
        with httpx.stream("GET", f"{base}/api/alerts/stream", params={"cls": "OR"},
                          cookies={"edgevib_dashboard": TOKEN}, timeout=20) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines).startswith("retry:")
            s = Store(store_url)
            s.apply("alert", alert(7, cls="IR021"))  # filtered out
            s.apply("alert", alert(8, cls="OR014"))
            s.close()
            data = None
            for line in lines:
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    break
            assert data is not None and data["id"] == "alert0008xyz" and data["cls"] == "OR014"
    finally:
        server.should_exit = True
        th.join(10)
        app.state.dashboard.close()
    assert not th.is_alive()
