"""Invented sensor names cannot grow the metric labels or the heartbeat (issue 19), with the
in-memory link; message-size and inbox limits are in test_limits.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgevib.edge.agent import HEARTBEAT_MAX_BYTES, HEARTBEAT_SENSORS, Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.limits import message_limit
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.metrics import OTHER
from edgevib.edge.outbox import Outbox
from edgevib.edge.source import Message

from edgevib import protocol as proto
from edgevib.protocol.frames import encode, max_binary_bytes
from tests.edge.test_agent import Clock, _model
from tests.edge.test_limits import T, _frame


# -- labels and the heartbeat -------------------------------------------------------------------
@pytest.fixture
def rig(tmp_path: Path) -> dict[str, object]:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", max_sensors=1000, heartbeat_s=3600,
                            alert={"anomaly": False}, outbox={"path": str(tmp_path / "ob.sqlite")})
    link = MemoryLink(bus, "agent", clock=clock, inbox_size=100_000, inbox_bytes=cfg.inbox_bytes,
                      max_message=message_limit(cfg.max_frame_samples))
    agent = Agent(cfg, _model([]), link, Outbox(cfg.outbox.path), clock=clock)
    return {"agent": agent, "tx": MemoryLink(bus, "tx"), "link": link}


def _drain(agent: Agent) -> None:
    while agent.link.stats()["depth"]:
        agent.step(4096)


def test_invented_sensor_names_cannot_grow_labels_or_the_heartbeat(rig: dict) -> None:
    agent, tx = rig["agent"], rig["tx"]
    good = encode(_frame(64), "int16")
    # garbage on 2,000 invented names (none admitted: nothing decodable), then 5,000 names of 64
    # characters (the longest allowed) with a decodable frame each: max_sensors are admitted
    for i in range(2000):
        tx.publish(T.raw(f"junk{i}"), b"\0" * 50)
    names = [f"{i:05d}".ljust(proto.NAME_MAX, "x") for i in range(5000)]
    for name in names:
        tx.publish(T.raw(name), good)
    _drain(agent)
    snap = agent.metrics.snapshot()
    assert len(agent.sensors) == 1000
    assert set(snap["sensors"]) == set(names[:1000])  # type: ignore[arg-type]
    assert OTHER not in snap["sensors"]  # type: ignore[operator]
    drops = snap["drops"]
    assert drops == {"too_many_sensors": 4000, "bad_magic": 2000}  # type: ignore[comparison-overlap]
    assert agent.metrics.counters["frames_in"] == 7000
    hb = agent.heartbeat()
    payload = proto.dumps(hb)
    assert len(payload) < 64 * 1024 and len(payload) <= HEARTBEAT_MAX_BYTES
    proto.parse_heartbeat(payload)
    assert len(hb["sensors"]) <= HEARTBEAT_SENSORS
    assert hb["counters"]["sensors"] == 1000
    assert hb["counters"]["sensors_omitted"] == 1000 - len(hb["sensors"])


def test_the_heartbeat_lists_alerting_and_dropping_sensors_first(rig: dict) -> None:
    agent, tx = rig["agent"], rig["tx"]
    for i in range(300):
        tx.publish(T.raw(f"s{i:03d}"), encode(_frame(64), "int16"))
    for _ in range(3):
        tx.publish(T.raw("s250"), b"EVIB" + b"\0" * 60)  # truncated: a broken sensor
    _drain(agent)
    agent.sensors["s299"].alerter.active = "IR007"  # type: ignore[assignment]
    hb = agent.heartbeat()
    first = list(hb["sensors"])[:2]
    assert first == ["s299", "s250"], first
    assert hb["sensors"]["s250"]["dropped"] == 3


def test_transport_drops_appear_in_the_heartbeat(rig: dict) -> None:
    agent, tx, link = rig["agent"], rig["tx"], rig["link"]
    tx.publish(T.raw("de"), b"\0" * (max_binary_bytes(65_536) + 1))  # a 256 kB binary block: too large
    tx.publish(T.cmd, b"{" + b" " * proto.MAX_MESSAGE_BYTES)
    for _ in range(100):  # then 100 legitimate-sized 250 kB blocks: the 16 MiB budget holds ~64
        link.inbox.put(Message(T.raw("de"), b"\0" * 250_000, 0.0))
    hb = agent.heartbeat()
    assert hb["drops"]["too_large"] == 2
    assert hb["drops"]["queue_bytes_full"] == 100 - link.stats()["received"] > 0
    assert hb["counters"]["inbox_bytes"] <= agent.cfg.inbox_bytes
    _drain(agent)
    assert agent.heartbeat()["counters"]["inbox_bytes"] == 0
