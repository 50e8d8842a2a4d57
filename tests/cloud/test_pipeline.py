"""End to end on real Mosquitto and a real Flink mini-cluster, sharing one job.

Three simulated gateways publish alerts (with duplicates and malformed messages) and
heartbeats; the test computes the expected aggregates itself from what it published and
compares them with the store. Then one gateway goes silent and comes back, and finally
the job is SIGKILLed and restarted from its last checkpoint while gateways keep
publishing.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from edgevib.cloud.config import CloudConfig, load_config

from edgevib.broker import MosquittoProcess
from edgevib.testing import wait_until

pytestmark = pytest.mark.integration

WINDOW_MS = 2000
OFFLINE_AFTER_S = 3.0
FAULTS = ("B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021")


@dataclass
class Cloud:
    cfg: CloudConfig
    broker: MosquittoProcess
    bridge: Any
    job: Any
    sims: dict[str, Any]
    events: list[tuple[float, dict[str, Any]]]
    silent: set[str] = field(default_factory=set)
    hb_sent: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def store(self) -> Any:
        from edgevib.cloud.store import Store

        return Store(self.cfg.store_url)


def expected_counts(sims: dict[str, Any]) -> tuple[dict[tuple[str, int, str, str], int], dict[tuple[str, int, str, str], int]]:
    """Per (asset, window, class, severity) and per (site, ...): distinct raised alerts, computed here."""
    per_asset: Counter[tuple[str, int, str, str]] = Counter()
    per_site: Counter[tuple[str, int, str, str]] = Counter()
    seen: set[str] = set()
    for sim in sims.values():
        for a in sim.published.alerts:
            if a["id"] in seen or a["state"] != "raised":
                continue
            seen.add(a["id"])
            w = (a["t_ns"] // 1_000_000) // WINDOW_MS * WINDOW_MS
            asset = f"{a['site']}/{a['gateway']}/{a['sensor']}"
            # The edge's severity, kept as sent (the simulator sets it per fault size).
            per_asset[(asset, w, a["class"], a["severity"])] += 1
            per_site[(a["site"], w, a["class"], a["severity"])] += 1
    return dict(per_asset), dict(per_site)


def last_window_end(sims: dict[str, Any]) -> int:
    t = max(a["t_ns"] for s in sims.values() for a in s.published.alerts) // 1_000_000
    return (t // WINDOW_MS + 1) * WINDOW_MS


def wait_for(pred: Any, timeout: float, what: str, job: Any = None) -> Any:
    return wait_until(pred, timeout, what, None if job is None else job.check, interval=0.2)


@pytest.fixture(scope="module")
def cloud(flink_prereqs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    import paho.mqtt.client as mqtt
    from edgevib.cloud.flink.runner import JobProcess
    from edgevib.cloud.ingest.bridge import Bridge
    from edgevib.cloud.testing import GatewaySim
    from paho.mqtt.enums import CallbackAPIVersion

    tmp: Path = tmp_path_factory.mktemp("cloud")
    broker = MosquittoProcess()
    broker.start()
    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "store_url": f"sqlite:///{tmp}/store.db", "spool_dir": str(tmp / "spool"),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "bridge": {"client_id": "bridge-test", "flush_ms": 50},
        "job": {"window_s": WINDOW_MS // 1000, "out_of_orderness_s": 1.0, "offline_after_s": OFFLINE_AFTER_S,
                "incident_k": 3, "incident_window_s": 5, "incident_bucket_s": 1, "incident_resolve_s": 4,
                "checkpoint_interval_ms": 1000, "file_monitor_ms": 100, "drift_anomalies": 3, "drift_window_s": 4,
                "indicator_rollups_s": [WINDOW_MS // 1000, 3600]},
        # ind-a keeps the default (ISO zones); ind-b has absolute levels (the rule reaches the job's TOML)
        "levels": {"sensors": ["s2/g3/ind-b=absolute:2:4"]},
    })
    events: list[tuple[float, dict[str, Any]]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-listener")
    sub.on_message = lambda c, u, m: events.append((time.time(), json.loads(m.payload)))
    sub.on_connect = lambda c, u, f, r, p: c.subscribe(cfg.fleet_topic, qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    bridge = Bridge(cfg)
    bridge.start()
    job = JobProcess(cfg, tmp / "job")
    job.start()
    sims = {name: GatewaySim(broker.url, site, name) for site, name in (("s1", "g1"), ("s1", "g2"), ("s2", "g3"))}
    c = Cloud(cfg, broker, bridge, job, sims, events)

    def heartbeats() -> None:
        # Gateways heartbeat every 0.5 s: liveness, and the event time that closes windows.
        while not c.stop.wait(0.5):
            for name, sim in sims.items():
                if name not in c.silent:
                    sim.heartbeat()
                    c.hb_sent[name] = time.time()

    pump = threading.Thread(target=heartbeats, daemon=True)
    pump.start()
    try:
        st = c.store()
        wait_for(lambda: len(st.gateways()) == 3, 120, "the job to store the first heartbeats", job)
        st.close()
        yield c
    finally:
        c.stop.set()
        pump.join(5)
        for sim in sims.values():
            sim.close()
        job.stop()
        bridge.stop()
        sub.loop_stop()
        broker.stop()


def publish_alerts(c: Cloud, seconds: float, rng: random.Random, dup_every: int = 7) -> int:
    n = 0
    t_end = time.time() + seconds
    while time.time() < t_end:
        for sim in c.sims.values():
            cls = rng.choice(FAULTS)
            doc = sim.alert(cls, sensor=rng.choice(("de", "fe")), state="raised" if rng.random() < 0.9 else "cleared")
            n += 1
            if n % dup_every == 0:
                sim.republish(doc)
        time.sleep(0.03)
    return n


def test_aggregates_equal_independent_counts_and_dead_letters(cloud: Cloud) -> None:
    rng = random.Random(7)
    g1 = cloud.sims["g1"]
    publish_alerts(cloud, 3.0, rng)
    # Malformed input in the middle of the stream: each must reach the dead-letter table.
    good = g1.alert("IR021")
    bad = dict(good, id="x1", site="s9")
    future = dict(good, id="x2", t_ns=good["t_ns"] + 3_600 * 10**9)
    g1.raw("alerts", b"{not json")
    g1.raw("alerts", json.dumps({k: v for k, v in good.items() if k != "sensor"}).encode())
    g1.raw("alerts", json.dumps(dict(good, id="x0", **{"class": "ZZ007"})).encode())
    g1.raw("alerts", json.dumps(bad).encode())
    g1.raw("alerts", json.dumps(future).encode())
    g1.raw("heartbeat", b"[1, 2, 3]")
    g1.raw("status", b"maybe")
    g1.raw("models", b"{}")  # not a cloud topic: the bridge never subscribes, so it is not counted
    publish_alerts(cloud, 3.0, rng)

    st = cloud.store()
    want_asset, want_site = expected_counts(cloud.sims)
    end = last_window_end(cloud.sims)
    wait_for(lambda: st.asset_counts(max_window_end=end) == want_asset, 60,
             "stored per-asset counts to equal the test's own count", cloud.job)
    # Site counts roll up from the asset windows in a later operator: they may land a moment after.
    wait_for(lambda: {k: v for k, v in st.site_counts().items() if k[1] < end} == want_site, 30,
             "stored per-site counts to equal the test's own count", cloud.job)

    # Duplicates: each id stored once; the counts above already prove they were counted once.
    ids = {a["id"] for s in cloud.sims.values() for a in s.published.alerts}
    assert sum(s.published.duplicates for s in cloud.sims.values()) > 10
    assert st.query("SELECT COUNT(*) FROM alerts")[0][0] == len(ids)
    assert st.query("SELECT COUNT(*) FROM alerts WHERE late = 1")[0][0] == 0

    dead = st.dead_letter_counts()
    # bad JSON alert + a heartbeat that is a list; no sensor; unknown class, wrong site, bad
    # status; an event time an hour ahead.
    assert dead == {"bad_json": 2, "missing_field": 1, "bad_field": 3, "bad_time": 1}, dead
    # Health: one row per asset and window, 100 only where nothing serious happened.
    health = st.query("SELECT asset, window_start, n_alerts, health FROM asset_health WHERE window_end <= ?", (end,))
    assert health and all(0 < h < 100 for _, _, n, h in health if n > 0)
    st.close()


def test_incidents_open_and_resolve(cloud: Cloud) -> None:
    g2 = cloud.sims["g2"]
    for _ in range(4):
        g2.alert("OR021", sensor="hot")  # four serious alerts within a second: k = 3
        time.sleep(0.1)
    st = cloud.store()
    asset = "s1/g2/hot"
    wait_for(lambda: any(i["asset"] == asset for i in st.incidents()), 30, "an incident to open", cloud.job)
    # No serious alert for incident_resolve_s of event time (heartbeats move it on): resolved.
    wait_for(lambda: all(i["status"] == "resolved" for i in st.incidents() if i["asset"] == asset), 30,
             "the incident to resolve", cloud.job)
    mine = [i for i in st.incidents() if i["asset"] == asset]
    assert len(mine) == 1 and mine[0]["n_alerts"] == 4
    types = [e["type"] for _, e in cloud.events if e.get("asset") == asset]
    assert types == ["incident_opened", "incident_resolved"]
    st.close()


def test_gateway_offline_within_t_plus_2s_then_online(cloud: Cloud) -> None:
    cloud.silent.add("g3")
    time.sleep(0.6)  # let an in-flight heartbeat land
    last = cloud.hb_sent["g3"]
    wait_for(lambda: any(e["type"] == "offline" and e["gateway"] == "g3" for _, e in cloud.events),
             OFFLINE_AFTER_S + 10, "an offline event for g3")
    t_off = next(t for t, e in cloud.events if e["type"] == "offline" and e["gateway"] == "g3")
    assert t_off - last <= OFFLINE_AFTER_S + 2.0, f"offline after {t_off - last:.2f} s"
    assert t_off - last >= OFFLINE_AFTER_S - 0.1
    n_online = sum(1 for _, e in cloud.events if e["type"] == "online" and e["gateway"] == "g3")
    cloud.silent.discard("g3")
    wait_for(lambda: sum(1 for _, e in cloud.events if e["type"] == "online" and e["gateway"] == "g3") > n_online,
             10, "an online event for g3")
    st = cloud.store()
    wait_for(lambda: st.gateways()["s2/g3"]["status"] == "online", 5, "g3 online in the store")
    gw = st.gateways()["s2/g3"]
    assert gw["model_name"] == "cnn" and gw["model_sha256"] == "0" * 64  # the inventory
    st.close()


def test_kill_and_restart_from_checkpoint_loses_and_doubles_nothing(cloud: Cloud) -> None:
    from edgevib.cloud.flink.job import latest_checkpoint

    rng = random.Random(11)
    wait_for(lambda: latest_checkpoint(cloud.cfg.checkpoint_dir) is not None, 30, "a completed checkpoint")
    done = threading.Event()
    sent = [0]

    def publisher() -> None:
        while not done.is_set():
            sent[0] += publish_alerts(cloud, 0.5, rng, dup_every=5)

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    time.sleep(2.0)
    cloud.job.kill()  # SIGKILL client, JVM and Python workers: a crash
    killed_at = time.monotonic()
    time.sleep(1.0)
    cloud.job.start(restore="latest")
    time.sleep(4.0)
    done.set()
    t.join(10)
    assert sent[0] > 50

    st = cloud.store()
    want_asset, want_site = expected_counts(cloud.sims)
    end = last_window_end(cloud.sims)
    wait_for(lambda: st.asset_counts(max_window_end=end) == want_asset, 120,
             "counts after the restart to equal the test's own count", cloud.job)
    assert {k: v for k, v in st.site_counts().items() if k[1] < end} == want_site
    ids = {a["id"] for s in cloud.sims.values() for a in s.published.alerts}
    wait_for(lambda: st.query("SELECT COUNT(*) FROM alerts")[0][0] >= len(ids), 60, "every alert stored", cloud.job)
    assert st.query("SELECT COUNT(*) FROM alerts")[0][0] == len(ids)
    # Incidents: one row per episode; two open at once for one asset would be a double.
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for i in st.incidents():
        by_asset.setdefault(i["asset"], []).append(i)
    for asset, incs in by_asset.items():
        open_ = [i for i in incs if i["status"] == "open"]
        assert len(open_) <= 1, (asset, incs)
        for a, b in zip(incs, incs[1:], strict=False):
            assert a["resolved_ms"] is not None and a["resolved_ms"] <= b["opened_ms"], (asset, incs)
    opened = Counter(e["id"] for _, e in cloud.events if e["type"] == "incident_opened")
    stored_open = {f"{i['id']}:opened" for i in st.incidents()}
    assert set(opened) <= stored_open
    print(f"restart: job back and caught up {time.monotonic() - killed_at:.1f} s after the kill")
    st.close()


def test_model_status_verdict_reaches_the_store(cloud: Cloud) -> None:
    # A probation rollback is reported after `edgevib models push` returned: the job stores it.
    from edgevib.protocol.updates import make_status

    t_ns = time.time_ns()
    cloud.sims["g2"].model_status(make_status(
        site="s1", gateway="g2", update_id="cnn-2-ab", result="rolled_back", reason="probation_failed", t_ns=t_ns,
        manifest={"name": "cnn", "version": "2", "sha256": "ab" * 32}))
    st = cloud.store()
    want = [("s1", "g2", t_ns // 1_000_000, "cnn", "2", "rolled_back", "probation_failed")]
    sql = "SELECT site, gateway, ts_ms, name, version, result, reason FROM model_status WHERE gateway = 'g2'"
    wait_for(lambda: st.query(sql) == want, 60, "the verdict in the model_status table", cloud.job)
    st.close()


def test_indicators_are_stored_raw_and_rolled_up_per_sensor(cloud: Cloud) -> None:
    """Indicators computed by the edge's own code (edgevib.edge.indicators) on sines of growing
    amplitude, published for two sensors; the store's raw rows and 2 s rollups must equal
    what this test computes from what it sent."""
    import math

    import numpy as np
    from edgevib.edge.indicators import compute
    from edgevib.models.bearing import CWRU_DE_6205
    from edgevib.models.orders import fault_frequencies

    from edgevib.protocol import make_indicators

    fs, fh = 12000.0, fault_frequencies(CWRU_DE_6205, 1797.0)
    t = np.arange(int(2 * fs)) / fs
    rng = np.random.default_rng(3)
    g3 = cloud.sims["g3"]
    sent: list[dict[str, Any]] = []
    for i in range(16):  # ~4.8 s: two to three 2 s windows per sensor
        for sensor, f_hz in (("ind-a", 100.0), ("ind-b", 160.0)):
            x = (0.1 + 0.05 * i) * np.sin(2 * np.pi * f_hz * t) + 0.02 * rng.standard_normal(len(t))
            ind = compute(x, fs, fh)
            doc = make_indicators(site="s2", gateway="g3", sensor=sensor, t_ns=time.time_ns(), sample_rate=fs,
                                  iso_group=2, iso_foundation="rigid", rpm=1797.0, rpm_source="configured",
                                  **ind.fields())
            g3.indicators(doc)
            sent.append(doc)
        time.sleep(0.3)
    st = cloud.store()
    raw_sql = "SELECT sensor, t_ms, vel_rms_mm_s, kurtosis, iso_zone FROM indicators WHERE gateway = 'g3'"
    wait_for(lambda: len(st.query(raw_sql)) == len(sent), 60, "every indicator in the indicators table", cloud.job)
    assert sorted(st.query(raw_sql)) == sorted((d["sensor"], d["t_ns"] // 1_000_000, d["vel_rms_mm_s"],
                                                d["kurtosis"], d["iso_zone"]) for d in sent)
    want: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for d in sent:
        want.setdefault((d["sensor"], d["t_ns"] // 1_000_000 // WINDOW_MS * WINDOW_MS), []).append(d)
    last_end = max(w for _, w in want) + WINDOW_MS

    def rollups() -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["sensor"], r["window_start"]): r for r in st.indicator_rollups(WINDOW_MS // 1000)
                if r["gateway"] == "g3"}

    # heartbeats keep the watermark moving: every window closes within a few seconds
    wait_for(lambda: len(rollups()) == len(want), 60, f"{len(want)} rollups up to {last_end}", cloud.job)
    got = rollups()
    assert set(got) == set(want)
    for key, docs in want.items():
        r = got[key]
        assert r["n"] == len(docs) and r["window_end"] == key[1] + WINDOW_MS and r["site"] == "s2"
        for prefix, col in (("vel", "vel_rms_mm_s"), ("acc_rms", "acc_rms_g"), ("kurtosis", "kurtosis")):
            vals = [d[col] for d in docs]
            assert r[f"{prefix}_min"] == min(vals) and r[f"{prefix}_max"] == max(vals), (key, prefix)
            assert math.isclose(r[f"{prefix}_mean"], sum(vals) / len(vals), rel_tol=1e-9), (key, prefix)
        assert r["worst_zone"] == max(d["iso_zone"] for d in docs)
    # velocities grew through the zones: the rollups saw both ends
    assert min(r["worst_zone"] for r in got.values()) < "D" <= max(r["worst_zone"] for r in got.values())

    # Level crossings: what the levels logic makes of the same readings, sensor by sensor, in
    # the order sent (ind-a on ISO zones C/D, ind-b on its absolute 2/4 mm/s).
    logic = cloud.cfg.levels.logic()
    want_events = []
    for sensor in ("ind-a", "ind-b"):
        state: dict[str, Any] | None = None
        for d in (d for d in sent if d["sensor"] == sensor):
            rec = {"site": d["site"], "gateway": d["gateway"], "sensor": sensor, "asset": f"s2/g3/{sensor}",
                   "ev_ms": d["t_ns"] // 1_000_000, "vel_rms_mm_s": d["vel_rms_mm_s"], "iso_zone": d["iso_zone"],
                   "iso_group": d["iso_group"], "iso_foundation": d["iso_foundation"]}
            state, out = logic.on_indicator(state, f"s2/g3/{sensor}", rec)
            want_events += [(r["sensor"], r["ts_ms"], r["kind"], r["level"], r["mode"]) for _, _, r in out]
    ev_sql = "SELECT sensor, ts_ms, kind, level, mode FROM level_events WHERE gateway = 'g3'"
    wait_for(lambda: len(st.query(ev_sql)) >= len(want_events), 60, "the level events", cloud.job)
    assert sorted(st.query(ev_sql)) == sorted(want_events)
    # both sensors climbed to alarm, each by its own levels
    assert {(s, lv, m) for s, _, k, lv, m in want_events if k == "raised"} >= {
        ("ind-a", "alarm", "iso"), ("ind-b", "alarm", "absolute")}, want_events
    st.close()


def test_anomaly_drift_emits_a_retrain_trigger_once(cloud: Cloud) -> None:
    """Runs last: its anomaly alerts would change the aggregates the tests above count."""
    g2 = cloud.sims["g2"]
    sent = [g2.alert(kind="anomaly", sensor=f"drift{i}") for i in range(6)]  # within ~0.5 s of event time
    for doc in sent[:3]:
        g2.republish(doc)  # duplicates must not count twice
    st = cloud.store()
    wait_for(lambda: st.query("SELECT id FROM retrain_triggers WHERE reason = 'drift'"), 60,
             "a drift trigger", cloud.job)
    time.sleep(3.0)  # the other 4 s window (if the burst straddled two) closes too
    rows = st.query("SELECT id, gateway, detail FROM retrain_triggers WHERE reason = 'drift'")
    # six anomalies in at most two 4 s windows: one trigger per window holding >= 3 of them
    assert 1 <= len(rows) <= 2 and len({r[0] for r in rows}) == len(rows), rows
    assert all(r[1] == "g2" and r[0].startswith("drift:s1/g2:") for r in rows)
    assert sum(json.loads(r[2])["anomalies"] for r in rows) <= 6
    assert all(json.loads(r[2])["anomalies"] >= 3 for r in rows)
    st.close()
