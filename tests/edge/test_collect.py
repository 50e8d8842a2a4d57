"""EvidenceSampler: which windows go out, token buckets, the outbox cap and priority, the agent hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import Agent
from edgevib.edge.collect import EvidenceSampler
from edgevib.edge.config import EvidenceUploadConfig, load_agent_config
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.metrics import Metrics
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import PRIORITY_ALERT, PRIORITY_DATA, Outbox
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta

from edgevib import protocol as proto
from edgevib.protocol.evidence import decode
from edgevib.protocol.frames import Frame, encode

T = proto.Topics("plant", "gw")
W = 64


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _model(window: int = W) -> FunctionModel:
    return FunctionModel(ModelMeta(CLASSES_10, window=window, arch="t"),
                         lambda x: np.full((len(x), 10), 0.1, np.float32), name="t")


def _probs(top: int, p: float) -> np.ndarray:
    row = np.full(10, (1 - p) / 9, np.float32)
    row[top] = p
    return row


def _sampler(tmp_path: Path, clock: Clock, **cfg: object) -> tuple[EvidenceSampler, Outbox]:
    ob = Outbox(tmp_path / "ob.sqlite", clock=clock)
    m = _model()
    s = EvidenceSampler(EvidenceUploadConfig(enabled=True, **cfg), T, ob, lambda: m, Metrics(clock=clock),  # type: ignore[arg-type]
                        clock, seed=3)
    return s, ob


def _records(ob: Outbox) -> list[tuple[int, object]]:
    return [(r.priority, decode(r.payload)) for r in ob.pending(1000) if r.topic == T.evidence]


def test_alert_uploads_the_last_k_windows_of_that_sensor_with_the_alert_id(tmp_path: Path) -> None:
    clock = Clock()
    s, ob = _sampler(tmp_path, clock, alert_windows=3, low_confidence=0.0, healthy_every=10**9)
    x = np.arange(W, dtype=np.float32)
    for i in range(5):
        s.observe("de", 1000 + i, x + i, _probs(4, 0.95), 1797.0)
        s.observe("fe", 2000 + i, x - i, _probs(4, 0.95), 1797.0)
    assert len(ob) == 0, "confident fault windows alone are not uploaded"
    assert s.on_alert("de", "alert-1") == 3
    recs = _records(ob)
    assert [p for p, _ in recs] == [PRIORITY_DATA] * 3
    got = [r for _, r in recs]
    assert [r.t_ns for r in got] == [1002, 1003, 1004]  # type: ignore[attr-defined]
    assert {r.sensor for r in got} == {"de"} and {r.alert_id for r in got} == {"alert-1"}  # type: ignore[attr-defined]
    assert {r.reason for r in got} == {"alert"} and got[0].pred_cls == "IR007"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(got[-1].window, x + 4)  # type: ignore[attr-defined]
    assert got[0].model["name"] == "t" and got[0].sample_rate == 12000.0  # type: ignore[attr-defined]
    assert s.on_alert("de", "alert-1") == 0, "a window goes out once per alert"
    assert s.metrics is not None and s.metrics.counters["evidence_sent"] == 3


def test_an_early_alert_gets_the_rest_of_its_windows_from_those_that_follow(tmp_path: Path) -> None:
    clock = Clock()
    s, ob = _sampler(tmp_path, clock, alert_windows=6, low_confidence=0.0, healthy_every=10**9)
    x = np.zeros(W, np.float32)
    for i in range(2):
        s.observe("de", 1000 + i, x, _probs(4, 0.95), None)
    assert s.on_alert("de", "a1") == 2  # only two windows seen so far
    for i in range(2, 9):
        s.observe("de", 1000 + i, x, _probs(4, 0.95), None)
        s.observe("fe", 2000 + i, x, _probs(4, 0.95), None)  # another sensor's windows are not the alert's
    got = [r for _, r in _records(ob)]
    assert [r.t_ns for r in got] == [1000, 1001, 1002, 1003, 1004, 1005]  # type: ignore[attr-defined]
    assert {r.alert_id for r in got} == {"a1"} and {r.sensor for r in got} == {"de"}  # type: ignore[attr-defined]


def test_low_confidence_and_one_in_n_healthy(tmp_path: Path) -> None:
    clock = Clock()
    s, ob = _sampler(tmp_path, clock, low_confidence=0.5, healthy_every=10, per_minute=10**6)
    x = np.zeros(W, np.float32)
    for i in range(2000):
        s.observe("de", i, x, _probs(0, 0.99), None)
    healthy = [r for _, r in _records(ob)]
    assert all(r.reason == "healthy_sample" and r.pred_cls == "normal" for r in healthy)  # type: ignore[attr-defined]
    assert 140 <= len(healthy) <= 260, len(healthy)  # ~1 in 10 of 2000 (seeded)
    s.observe("de", 5000, x, _probs(7, 0.4), None)
    last = _records(ob)[-1][1]
    assert last.reason == "low_confidence" and last.probability == pytest.approx(0.4)  # type: ignore[attr-defined]
    # the low-confidence window claimed by an alert goes out again, now with the alert id
    assert s.on_alert("de", "a9") == 5  # the ring: the last alert_windows (5) windows
    last = _records(ob)[-1][1]
    assert last.t_ns == 5000 and last.alert_id == "a9" and last.reason == "alert"  # type: ignore[attr-defined]


def test_token_bucket_per_kind_with_injectable_clock(tmp_path: Path) -> None:
    clock = Clock()
    s, ob = _sampler(tmp_path, clock, per_minute=6, low_confidence=0.5, alert_windows=2)
    x = np.zeros(W, np.float32)
    for i in range(20):
        s.observe("de", i, x, _probs(7, 0.3), None)
    assert s.sent == 6 and s.dropped["rate_limited"] == 14  # burst of one minute's worth
    assert s.on_alert("de", "a1") == 2, "the alert bucket is separate from the low-confidence one"
    clock.t += 10  # 6/min = 1 token per 10 s
    s.observe("de", 100, x, _probs(7, 0.3), None)
    s.observe("de", 101, x, _probs(7, 0.3), None)
    assert s.sent == 9 and s.dropped["rate_limited"] == 15
    assert s.metrics is not None and s.metrics.counters["evidence_dropped_rate_limited"] == 15


def test_outbox_cap_and_alerts_evict_evidence_never_the_reverse(tmp_path: Path) -> None:
    clock = Clock()
    s, ob = _sampler(tmp_path, clock, low_confidence=0.5, per_minute=10**6, max_outbox_bytes=3000)
    x = np.zeros(W, np.float32)
    for i in range(20):
        s.observe("de", i, x, _probs(7, 0.3), None)
    size = len(ob.pending(1)[0].payload)
    assert s.sent == 3000 // size and s.dropped["outbox_cap"] == 20 - s.sent
    assert ob.size_bytes <= 3000
    # a full outbox (its own bound) evicts evidence for alerts; evidence never evicts alerts
    small = Outbox(tmp_path / "small.sqlite", max_rows=3, clock=clock)
    m = _model()
    s2 = EvidenceSampler(EvidenceUploadConfig(enabled=True, low_confidence=0.5, per_minute=10**6), T, small,
                         lambda: m, None, clock)
    s2.observe("de", 1, x, _probs(7, 0.3), None)
    for _ in range(3):
        small.put(T.alerts, b"{}", qos=1, priority=PRIORITY_ALERT)
    assert [r.priority for r in small.pending()] == [PRIORITY_ALERT] * 3 and small.stats.evicted == 1
    s2.observe("de", 2, x, _probs(7, 0.3), None)
    assert s2.dropped["outbox_full"] == 1 and len(small) == 3


def test_agent_uploads_evidence_behind_its_alert(tmp_path: Path) -> None:
    """The agent hook: evidence after the alert in the outbox, its alert id, at QoS 1 on the topic."""
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", batch_size=8, batch_deadline_ms=50,
                            heartbeat_s=3600, alert={"k": 3, "n": 3, "anomaly": False, "cooldown_s": 0},
                            evidence={"enabled": True, "alert_windows": 3, "low_confidence": 0.0},
                            outbox={"path": str(tmp_path / "ob.sqlite")})

    def fn(x: np.ndarray) -> np.ndarray:
        v = x[:, 0, :] - x[:, 0, :].mean(axis=1, keepdims=True)
        kurt = (v**4).mean(axis=1) / (v**2).mean(axis=1) ** 2
        p = np.full((len(x), 10), 0.01, np.float32)
        p[:, 4] = np.where(kurt > 4, 0.91, 0.0)
        p[:, 0] = np.where(kurt > 4, 0.0, 0.91)
        return p

    link = MemoryLink(bus, "agent", clock=clock)
    agent = Agent(cfg, FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="k"), fn, name="k"), link,
                  Outbox(cfg.outbox.path), clock=clock)
    cloud, sensor = MemoryLink(bus, "cloud"), MemoryLink(bus, "sensor")
    cloud.subscribe(T.alerts)
    cloud.subscribe(T.evidence)
    x = np.random.default_rng(0).normal(0, 0.05, 36000).astype(np.float32)
    x[::400] += 3.0  # impacts: high kurtosis in every window
    for i in range(0, len(x) - 1024 + 1, 1024):
        sensor.publish(T.raw("de"), encode(Frame(i // 1024, 10**18 + round(i * 1e9 / 12000), 12000.0,
                                                 x[i:i + 1024]), "float32"))
    for _ in range(100):
        agent.step()
        clock.t += 0.06
    msgs = list(iter(lambda: cloud.poll(0), None))
    alerts = [proto.parse_alert(m.payload) for m in msgs if m.topic == T.alerts]
    ev = [decode(m.payload) for m in msgs if m.topic == T.evidence]
    raised = [a for a in alerts if a["state"] == "raised"]
    assert len(raised) == 1 and len(ev) == 3
    assert msgs.index(next(m for m in msgs if m.topic == T.alerts)) < msgs.index(
        next(m for m in msgs if m.topic == T.evidence)), "the alert is published before its evidence"
    assert {r.alert_id for r in ev} == {raised[0]["id"]} and {r.reason for r in ev} == {"alert"}
    assert max(r.t_ns for r in ev) == raised[0]["t_ns"], "the window that raised the alert is included"
    assert all(r.window.shape == (2048,) for r in ev)
    # the sensor's bearing (the agent's default: CWRU 6205) rides along, so the cloud can compute order features
    assert {r.geometry().orders() for r in ev} == {agent.sensors["de"].evidence.geometry.orders()}  # type: ignore[union-attr]
    assert all(r.bearing is not None and r.bearing["n_balls"] == 9 for r in ev)
    assert agent.metrics.counters["evidence_sent"] == 3
    # the outbox holds both; the agent's alert counters count alerts only
    assert agent.metrics.counters["alerts_sent"] == len(alerts)
    assert agent.metrics.counters["evidence_published"] == 3


def test_healthy_sampling_is_seeded(tmp_path: Path) -> None:
    picks = []
    m = _model()
    for run in range(2):
        clock = Clock()
        ob = Outbox(tmp_path / f"ob{run}.sqlite", clock=clock)
        s = EvidenceSampler(EvidenceUploadConfig(enabled=True, healthy_every=7, per_minute=10**6), T, ob,
                            lambda: m, None, clock, seed=42)
        for i in range(300):
            s.observe("de", i, np.zeros(W, np.float32), _probs(0, 0.99), None)
        picks.append([r.t_ns for _, r in _records(ob)])  # type: ignore[attr-defined]
    assert picks[0] == picks[1] and 20 <= len(picks[0]) <= 70


def test_a_failing_outbox_drops_evidence_and_the_sampler_goes_on(tmp_path: Path) -> None:
    from edgevib.edge.errors import OutboxError

    clock = Clock()
    s, ob = _sampler(tmp_path, clock, alert_windows=2, low_confidence=0.0, healthy_every=10**9)
    x = np.zeros(W, np.float32)
    for i in range(2):
        s.observe("de", i, x, _probs(4, 0.95), None)

    def full(*_a: object, **_k: object) -> int:
        raise OutboxError("edge.outbox", "cannot write (database or disk is full)", "check disk space")

    ob.put = full  # type: ignore[method-assign]
    assert s.on_alert("de", "a1") == 0
    assert s.dropped["outbox_error"] == 2 and s.sent == 0
