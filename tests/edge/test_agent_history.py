"""Each sensor's history ring holds what its readers need: 2 s where the speed estimate or the
indicators read it, else the 1 s an alert's evidence reads (issue 15: per-sensor memory)."""

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

from edgevib import protocol as proto
from edgevib.protocol.frames import Frame, encode

T = proto.Topics("plant", "gw")
SENSORS = {"estimated": {}, "topic": {"rpm_topic": "plant/line1/rpm"}, "fixed": {"speed_estimate": False}}


def _agent(tmp_path: Path, indicators: bool) -> tuple[Agent, MemoryLink]:
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600, sensors=SENSORS,
                            indicators={"enabled": indicators}, alert={"anomaly": False},
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    model = FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="flat"),
                          lambda x: np.full((len(x), 10), 0.1, np.float32), name="flat")
    bus = MemoryBus()
    # agent time stands still: every 2 s read stays due, so the 2 s are kept (plan_history)
    agent = Agent(cfg, model, MemoryLink(bus, "agent"), Outbox(cfg.outbox.path), clock=lambda: 0.0)
    return agent, MemoryLink(bus, "sensors")


@pytest.mark.parametrize(("indicators", "want_s"), [
    (True, {"estimated": 2.0, "topic": 2.0, "fixed": 2.0}),  # the indicators read 2 s of every sensor
    (False, {"estimated": 2.0, "topic": 1.0, "fixed": 1.0}),  # only the speed estimate does
])
def test_history_is_what_its_readers_need(tmp_path: Path, indicators: bool, want_s: dict[str, float],
                                          rng: np.random.Generator) -> None:
    agent, pub = _agent(tmp_path, indicators)
    x = (rng.normal(size=3 * 12000) * 0.1).astype(np.float32)
    for k in range(len(x) // 4000):
        for name in SENSORS:
            pub.publish(T.raw(name), encode(Frame(k, k * 333_333_333, 12000.0, x[k * 4000 : (k + 1) * 4000]), "int16"))
        while agent.link.stats()["depth"]:
            agent.step(max_messages=len(SENSORS))
    agent.flush(0.0)
    for name, seconds in want_s.items():
        w = agent.sensors[name].windower
        held = w.recent()
        assert w.history_len == int(seconds * 12000) and len(held) == w.history_len
        assert w.history_bytes == 2 * max(w.history_len, 2048 + 4096)  # int16 ring, no larger than needed
        assert agent.sensors[name].seen > 0


def _run(tmp_path: Path, x: np.ndarray) -> tuple[Agent, list[bytes], list[int]]:
    """Two sensors (speed estimated, indicators on: the defaults) fed 0.1 s frames, agent time
    following the signal; the indicator messages and, per frame, the ring size of sensor 'a'."""
    now = [100.0]
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600,
                            sensors={"a": {}, "b": {}}, alert={"anomaly": False},
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    model = FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="flat"),
                          lambda v: np.full((len(v), 10), 0.1, np.float32), name="flat")
    bus = MemoryBus()
    agent = Agent(cfg, model, MemoryLink(bus, "agent", clock=lambda: now[0]), Outbox(cfg.outbox.path),
                  clock=lambda: now[0])
    pub, cloud = MemoryLink(bus, "sensors"), MemoryLink(bus, "cloud")
    cloud.subscribe(T.indicators)
    sizes = []
    for k in range(len(x) // 1200):
        for name in ("a", "b"):
            pub.publish(T.raw(name), encode(Frame(k, k * 100_000_000, 12000.0, x[k * 1200 : (k + 1) * 1200]), "int16"))
        while agent.link.stats()["depth"]:
            agent.step()
        sizes.append(agent.sensors["a"].windower.history_bytes)
        now[0] += 0.1
    return agent, [m.payload for m in iter(lambda: cloud.poll(0), None)], sizes


def test_two_seconds_only_ahead_of_the_reads_and_the_same_reads(tmp_path: Path, rng: np.random.Generator,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Planned history (2 s from HISTORY_LEAD_S before a read until it is made) gives the same
    speed estimates and indicator messages, to the byte, as keeping 2 s all the time, and the
    ring is short for much of the time."""
    import edgevib.edge.agent as agent_mod

    x = (rng.normal(size=21 * 12000) * 0.1).astype(np.float32)
    planned, docs, sizes = _run(tmp_path / "a", x)
    monkeypatch.setattr(agent_mod, "HISTORY_LEAD_S", 1e9)  # every read always ahead: 2 s kept throughout
    always, docs_always, sizes_always = _run(tmp_path / "b", x)
    assert len(docs) == len(docs_always) >= 4 and docs == docs_always
    for name in ("a", "b"):
        c = planned.metrics.snapshot()["sensors"][name]  # type: ignore[index]
        ca = always.metrics.snapshot()["sensors"][name]  # type: ignore[index]
        assert c.get("speed_refused", 0) + c.get("speed_estimates", 0) >= 3
        assert (c.get("speed_estimates"), c.get("speed_refused")) == (ca.get("speed_estimates"), ca.get("speed_refused"))
    assert set(sizes_always[30:]) == {48_000}
    short = sum(b == 2 * 12_000 for b in sizes[30:]) / len(sizes[30:])  # int16, the evidence's 1 s
    assert short >= 0.3, sizes
