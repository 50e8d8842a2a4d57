"""The agent runs the two-input fault-type model with each sensor's own bearing and speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.outbox import Outbox
from edgevib.edge.runtime import OnnxModel
from edgevib.models.bearing import BearingGeometry
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.protocol.frames import Frame, encode

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo" / "faulttype.onnx"
T = proto.Topics("plant", "gw")


def test_each_sensor_is_diagnosed_with_its_own_bearing(tmp_path: Path) -> None:
    now = [1000.0]
    sensors = {  # two machines the model never saw, each with its own bearing and speed
        "fan": {"n_balls": 12, "ball_diameter": 11.0, "pitch_diameter": 58.0, "rpm": 1180.0},
        "pump": {"n_balls": 8, "ball_diameter": 15.0, "pitch_diameter": 65.0, "rpm": 2950.0},
    }
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", batch_size=8, batch_deadline_ms=50,
                            heartbeat_s=3600, sensors=sensors,
                            alert={"k": 2, "n": 3, "anomaly": False, "cooldown_s": 0},
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    bus = MemoryBus()
    link = MemoryLink(bus, "agent", status=(T.status, b"online", b"offline"), clock=lambda: now[0])
    agent = Agent(cfg, OnnxModel(ZOO), link, Outbox(cfg.outbox.path), clock=lambda: now[0])
    cloud, pub = MemoryLink(bus, "cloud"), MemoryLink(bus, "sensor")
    cloud.subscribe(T.alerts)
    faults = {"fan": "IR", "pump": "OR"}
    for name, fault in faults.items():
        s = sensors[name]
        geo = BearingGeometry(int(s["n_balls"]), s["ball_diameter"], s["pitch_diameter"])
        x = simulate(fault, duration_s=4.0, rpm=s["rpm"], geometry=geo, noise_g=0.03, seed=5)
        for i in range(0, len(x) - 1024 + 1, 1024):
            pub.publish(T.raw(name), encode(Frame(i // 1024, 10**18 + round(i * 1e9 / 12000), 12000.0,
                                                  x[i:i + 1024]), "int16"))
    for _ in range(200):
        agent.step()
        now[0] += 0.06
    raised = {a["sensor"]: a for m in iter(lambda: cloud.poll(0), None)
              if (a := proto.parse_alert(m.payload))["state"] == "raised" and a["kind"] == "fault"}
    assert {k: v["class"] for k, v in raised.items()} == faults
    assert all(np.isclose(sum(v["probs"].values()), 1, atol=1e-3) for v in raised.values())
