"""The agent with the in-memory link and a function model: batching, alerts, outbox, drops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import Outbox
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.protocol.frames import Frame, encode

W = 2048
T = proto.Topics("plant", "gw")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _model(calls: list[int]) -> FunctionModel:
    """IR007 when the window's kurtosis is high (impacts), else normal: a stand-in with real inputs."""

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        v = x[:, 0, :] - x[:, 0, :].mean(axis=1, keepdims=True)
        kurt = (v**4).mean(axis=1) / (v**2).mean(axis=1) ** 2
        p = np.full((len(x), 10), 0.01, np.float32)
        p[:, 4] = np.where(kurt > 4, 0.91, 0.01)
        p[:, 0] = np.where(kurt > 4, 0.0, 0.91)
        return p

    return FunctionModel(ModelMeta(CLASSES_10, window=W, arch="kurt"), fn, name="kurt")


@pytest.fixture
def rig(tmp_path: Path) -> dict[str, object]:
    bus = MemoryBus()
    clock = Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", batch_size=8, batch_deadline_ms=50,
                            heartbeat_s=3600, alert={"k": 2, "n": 3, "anomaly": False, "cooldown_s": 0},
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    calls: list[int] = []
    link = MemoryLink(bus, "agent", status=(T.status, b"online", b"offline"), clock=clock)
    outbox = Outbox(cfg.outbox.path)
    agent = Agent(cfg, _model(calls), link, outbox, clock=clock)
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.alerts)
    cloud.subscribe(T.heartbeat)
    sensor = MemoryLink(bus, "sensor")
    return {"bus": bus, "clock": clock, "agent": agent, "calls": calls, "cloud": cloud, "sensor": sensor,
            "outbox": outbox, "cfg": cfg, "link": link}


def _send(sensor: MemoryLink, name: str, x: np.ndarray, frame: int = 1024, seq0: int = 0) -> int:
    for i in range(0, len(x) - frame + 1, frame):
        f = Frame(seq0 + i // frame, 10**18 + round(i * 1e9 / 12000), 12000.0, x[i:i + frame])
        sensor.publish(T.raw(name), encode(f, "int16"))
    return len(x) // frame


def _alerts(cloud: MemoryLink) -> list[dict[str, object]]:
    return [proto.parse_alert(m.payload) for m in iter(lambda: cloud.poll(0), None) if m.topic == T.alerts]


def _run(agent: Agent, clock: Clock, steps: int = 200) -> None:
    for _ in range(steps):
        agent.step()
        clock.t += 0.06  # past the batch deadline every step


def test_windows_of_all_sensors_share_one_batched_call(rig: dict) -> None:
    agent, sensor, calls = rig["agent"], rig["sensor"], rig["calls"]
    for name in ("a", "b", "c", "d"):
        _send(sensor, name, simulate("normal", duration_s=8192 / 12000, seed=1), frame=4096)
    agent.step()
    # 4 sensors x 7 windows (8192 samples, hop 1024) = 28 windows -> batches of at most 8
    assert calls[:1] == [8]
    _run(agent, rig["clock"], 3)
    assert calls == [8, 8, 8, 4]
    assert agent.metrics.counters["windows"] == 28


def test_deadline_flushes_a_partial_batch(rig: dict) -> None:
    agent, clock, calls = rig["agent"], rig["clock"], rig["calls"]
    _send(rig["sensor"], "a", simulate("normal", duration_s=0.2, seed=1))  # 1 window
    agent.step()
    assert calls == []  # not full, deadline not reached
    clock.t += 0.051
    agent.step()
    assert calls == [1]


def test_fault_alert_carries_evidence_and_is_acked_out_of_the_outbox(rig: dict) -> None:
    agent, cloud, outbox = rig["agent"], rig["cloud"], rig["outbox"]
    _send(rig["sensor"], "de", simulate("IR", duration_s=2.0, seed=3, severity=3.0))
    _run(agent, rig["clock"], 30)
    alerts = _alerts(cloud)
    raised = [a for a in alerts if a["state"] == "raised"]
    assert len(raised) == 1
    a = raised[0]
    assert a["class"] == "IR007" and a["fault_type"] == "IR" and a["kind"] == "fault"
    assert a["physics"] == "IR" and a["agree"] is True and a["severity"] == "warning"
    assert a["model"]["name"] == "kurt" and a["asset"] == "de"
    assert set(a["probs"]) == set(CLASSES_10) and a["stats"]["kurtosis"] > 4
    assert "bpfi" in a["evidence"]["peaks"]
    assert len(outbox) == 0 and agent.metrics.counters["alerts_acked"] == 1


def test_alerts_wait_in_the_outbox_while_offline_then_arrive_in_order(rig: dict) -> None:
    agent, bus, link, cloud = rig["agent"], rig["bus"], rig["link"], rig["cloud"]
    bus.disconnect_all()
    x = simulate("IR", duration_s=1.0, seed=3, severity=3.0)
    # three sensors raise while the broker is away (sensor link is offline: feed the agent directly)
    for name in ("s1", "s2", "s3"):
        for i in range(0, len(x) - 1023, 1024):
            link.inbox.put(_msg(name, x, i))
        _run(agent, rig["clock"], 5)
    assert len(rig["outbox"]) == 3 and _alerts(cloud) == []
    cloud.reconnect()
    link.reconnect()
    _run(agent, rig["clock"], 3)
    got = _alerts(cloud)
    assert [a["sensor"] for a in got] == ["s1", "s2", "s3"] and len(rig["outbox"]) == 0


def test_alerts_acknowledged_just_before_a_broker_crash_are_sent_again(rig: dict) -> None:
    """Mosquitto acks QoS 1 before it persists: the agent re-sends what was acked just before an outage."""
    agent, bus, link, cloud, clock = rig["agent"], rig["bus"], rig["link"], rig["cloud"], rig["clock"]
    _send(rig["sensor"], "de", simulate("IR", duration_s=2.0, seed=3, severity=3.0))
    _run(agent, clock, 30)
    first = [a for a in _alerts(cloud) if a["state"] == "raised"]
    assert len(first) == 1 and agent.metrics.counters["alerts_acked"] == 1
    bus.disconnect_all()  # the broker dies right after acknowledging (within outbox.replay_s = 5 s)
    _run(agent, clock, 2)
    cloud.reconnect()
    link.reconnect()
    _run(agent, clock, 3)
    again = [a for a in _alerts(cloud) if a["state"] == "raised"]
    assert [a["id"] for a in again] == [first[0]["id"]]  # the same alert, once more: receivers de-duplicate
    c = agent.metrics.counters
    assert c["replayed"] == 1 and c["replay_acked"] == 1 and c["alerts_acked"] == 1 and len(rig["outbox"]) == 0
    # an outage long after the last acknowledgement re-sends nothing
    clock.t += 60
    bus.disconnect_all()
    _run(agent, clock, 2)
    cloud.reconnect()
    link.reconnect()
    _run(agent, clock, 3)
    assert _alerts(cloud) == [] and c["replayed"] == 1


def _msg(name: str, x: np.ndarray, i: int) -> object:
    from edgevib.edge.source import Message

    f = Frame(i // 1024, 10**18 + round(i * 1e9 / 12000), 12000.0, x[i:i + 1024])
    return Message(T.raw(name), encode(f), 0.0)


def test_unacked_alerts_survive_a_restart(rig: dict, tmp_path: Path) -> None:
    bus, cfg = rig["bus"], rig["cfg"]
    bus.auto_ack = False  # the broker never acknowledges: rows stay in the outbox
    _send(rig["sensor"], "de", simulate("IR", duration_s=1.0, seed=3, severity=3.0))
    _run(rig["agent"], rig["clock"], 20)
    assert len(rig["outbox"]) == 1
    rig["link"].die()
    rig["outbox"].close()
    _alerts(rig["cloud"])  # discard the first (unacknowledged) copy
    bus.auto_ack = True
    clock = Clock()
    link2 = MemoryLink(bus, "agent2", clock=clock)
    agent2 = Agent(cfg, _model([]), link2, Outbox(cfg.outbox.path), clock=clock)
    agent2.step()
    agent2.step()  # the PUBACK is settled on the next pass
    got = _alerts(rig["cloud"])
    assert [a["class"] for a in got] == ["IR007"] and len(agent2.outbox) == 0


def test_garbage_is_counted_per_reason_and_shown_in_the_heartbeat(rig: dict) -> None:
    agent, sensor = rig["agent"], rig["sensor"]
    good = encode(Frame(0, 0, 12000.0, np.zeros(1024, np.float32)))
    bad = {
        "truncated": good[:-10], "bad_magic": b"XXXX" + good[4:], "bad_crc": good[:-1] + b"\x01",
        "bad_version": good[:4] + b"\x09" + good[5:], "bad_json": b"{not json",
    }
    for payload in bad.values():
        sensor.publish(T.raw("de"), payload)
    sensor.publish(T.raw("de"), encode(Frame(0, 0, 12000.0, np.zeros(70_000, np.float32))))
    sensor.publish("edgevib/v1/plant/gw/sensors/bad name/raw", good)
    agent.step()
    hb = proto.parse_heartbeat(proto.dumps(agent.heartbeat()))
    for reason in bad:
        assert hb["drops"][reason] == 1
    assert hb["drops"]["oversized"] == 1 and hb["drops"]["bad_name"] == 1
    # "de" never sent a decodable frame: not admitted, so no label of its own (issue 19)
    assert "de" not in hb["sensors"] and hb["counters"]["dropped"] == 7 and hb["counters"]["frames_in"] == 6
    # and the agent still works; once admitted, the sensor's drops carry its label
    n_good = _send(sensor, "de", simulate("normal", duration_s=0.5, seed=1))
    _run(agent, rig["clock"], 3)
    assert agent.metrics.counters["windows"] == 4
    sensor.publish(T.raw("de"), bad["bad_crc"])
    agent.step()
    hb = proto.parse_heartbeat(proto.dumps(agent.heartbeat()))
    assert hb["sensors"]["de"]["dropped"] == 1 and hb["sensors"]["de"]["frames_in"] == n_good + 1


def test_heartbeat_reports_model_latency_and_resources(rig: dict) -> None:
    agent, cloud = rig["agent"], rig["cloud"]
    _send(rig["sensor"], "de", simulate("normal", duration_s=1.0, seed=1))
    _run(agent, rig["clock"], 5)
    agent.heartbeat()
    hbs = [proto.parse_heartbeat(m.payload) for m in iter(lambda: cloud.poll(0), None) if m.topic == T.heartbeat]
    hb = hbs[-1]
    assert hb["model"]["name"] == "kurt" and hb["counters"]["windows"] == 10
    assert hb["counters"]["inference_p99_ms"] >= hb["counters"]["inference_p50_ms"] > 0
    assert hb["resources"]["rss_mb"] > 10 and hb["outbox_pending"] == 0
    assert hb["sensors"]["de"]["frames_in"] == 11


def test_anomaly_alert_after_baseline(tmp_path: Path) -> None:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", batch_size=8, heartbeat_s=3600,
                            alert={"k": 2, "n": 3, "cooldown_s": 0, "p_on": 0.99, "p_off": 0.98,
                                   "anomaly_every": 2},
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    link = MemoryLink(bus, "agent", clock=clock)
    never = FunctionModel(ModelMeta(CLASSES_10, window=W, arch="f"),
                          lambda x: np.tile(np.eye(10, dtype=np.float32)[0], (len(x), 1)))
    agent = Agent(cfg, never, link, Outbox(cfg.outbox.path), clock=clock, anomaly_baseline=33)
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.alerts)
    sensor = MemoryLink(bus, "sensor")
    n = _send(sensor, "de", simulate("normal", duration_s=7.0, seed=1))  # 80 windows: 40 scored
    _send(sensor, "de", simulate("OR", duration_s=1.0, seed=2, severity=3.0), seq0=n)
    _run(agent, clock, 40)
    got = _alerts(cloud)
    assert [(a["kind"], a["state"]) for a in got] == [("anomaly", "raised")]
    assert got[0]["anomaly_score"] > got[0]["anomaly_threshold"]


def test_a_failing_model_loses_the_batch_not_the_agent(rig: dict) -> None:
    agent, clock = rig["agent"], rig["clock"]
    broken = FunctionModel(ModelMeta(CLASSES_10, window=W, arch="broken"), lambda x: np.zeros((len(x), 3)))
    agent.model = broken
    _send(rig["sensor"], "de", simulate("normal", duration_s=0.5, seed=1))
    _run(agent, clock, 3)
    assert agent.metrics.drops["model_error"] == 4 and agent.metrics.counters["windows"] == 0


def test_sensor_count_is_bounded(rig: dict, tmp_path: Path) -> None:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", max_sensors=2,
                            outbox={"path": str(tmp_path / "o.sqlite")})
    link = MemoryLink(bus, "agent", clock=clock)
    agent = Agent(cfg, _model([]), link, Outbox(cfg.outbox.path), clock=clock)
    tx = MemoryLink(bus, "tx")
    for name in ("a", "b", "c", "d"):
        _send(tx, name, simulate("normal", duration_s=0.2, seed=1))
    agent.step()
    assert sorted(agent.sensors) == ["a", "b"] and agent.metrics.drops["too_many_sensors"] == 4  # 2 frames each of c, d


def test_cmd_heartbeat_and_rpm_topic(tmp_path: Path) -> None:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600,
                            sensors={"de": {"rpm": 1797, "rpm_topic": "plant/line1/rpm"}},
                            outbox={"path": str(tmp_path / "o.sqlite")})
    agent = Agent(cfg, _model([]), MemoryLink(bus, "agent", clock=clock), Outbox(cfg.outbox.path), clock=clock)
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.heartbeat)
    tx = MemoryLink(bus, "tx")
    agent.step()  # the first heartbeat goes out at start
    assert len([m for m in iter(lambda: cloud.poll(0), None)]) == 1
    tx.publish(T.cmd, b'{"cmd": "heartbeat"}')
    tx.publish(T.cmd, b'{"cmd": "reboot"}')
    tx.publish("plant/line1/rpm", b"1500.5")
    agent.step()
    agent.step()
    assert len([m for m in iter(lambda: cloud.poll(0), None)]) == 1
    assert agent.sensors["de"].evidence.rpm == 1500.5
    tx.publish("plant/line1/rpm", b"fast")
    agent.step()
    assert agent.metrics.drops["bad_cmd"] == 1 and agent.metrics.drops["bad_rpm"] == 1
