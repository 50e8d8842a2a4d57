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
    agent = Agent(cfg, model, MemoryLink(bus, "agent"), Outbox(cfg.outbox.path))
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
