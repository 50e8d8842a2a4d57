"""The agent with ``[source]`` and ``[sink]`` built by the registry, the source on a connection
of its own: frames and speeds come from the source, commands from the sink."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
from edgevib.edge import adapters
from edgevib.edge.adapters.memory import bus
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.memory import MemoryLink
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import Outbox
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta

from edgevib import protocol as proto
from edgevib.protocol.frames import Frame, encode


def test_frames_from_a_source_of_its_own_and_commands_over_the_sink(tmp_path: Path) -> None:
    cloud_bus, field_bus = f"cloud-{uuid.uuid4().hex[:6]}", f"field-{uuid.uuid4().hex[:6]}"
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600, batch_size=4,
                            outbox={"path": str(tmp_path / "ob.sqlite")},
                            sensors={"de": {"rpm_topic": "plant/line1/speed"}},
                            sink={"type": "memory", "options": {"bus": cloud_bus}},
                            source={"type": "memory", "url": f"memory://{field_bus}"})
    topics = proto.Topics("plant", "gw")
    sink, source = adapters.build(cfg, topics)
    assert source is not None  # a url of its own: not riding the sink
    model = FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="f"),
                          lambda x: np.tile(np.eye(10, dtype=np.float32)[0], (len(x), 1)))
    agent = Agent(cfg, model, sink, Outbox(cfg.outbox.path), source=source)
    sink.start()
    source.start()
    cloud, field = MemoryLink(bus(cloud_bus), "cloud"), MemoryLink(bus(field_bus), "sensor")
    cloud.subscribe(topics.heartbeat)
    x = np.random.default_rng(0).normal(0, 0.1, 4096).astype(np.float32)
    for i in range(4):
        field.publish(topics.raw("de"), encode(Frame(i, i * 4096 * 10**9 // 12000, 12000.0, x)))
    field.publish("plant/line1/speed", b"1712.5")
    cloud.publish(topics.raw("fe"), encode(Frame(0, 0, 12000.0, x)))  # frames on the sink's bus are not read
    for _ in range(5):  # a step stops taking frames once a batch is full
        agent.step()
    assert agent.metrics.counters["frames_in"] == 4 and set(agent.sensors) == {"de"}
    assert agent.sensors["de"].rpm == 1712.5 and agent.sensors["de"].rpm_source == "topic"
    while cloud.poll(0) is not None:  # the first step's heartbeat
        pass
    cloud.publish(topics.cmd, json.dumps({"cmd": "heartbeat"}).encode(), qos=1)
    agent.step()
    hb = cloud.poll(0)
    assert hb is not None and json.loads(hb.payload)["counters"]["received"] == 5  # the source's inbox
    source.close()
    sink.close()
