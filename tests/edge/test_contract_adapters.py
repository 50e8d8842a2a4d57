"""One contract suite, run over every registered adapter (memory, and MQTT on a real broker).

Each adapter supplies its harness (tests/edge/adapters/<name>.py); the suite never asks which
adapter it runs on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from edgevib.edge import adapters
from edgevib.edge.adapters import Reading, TopicSource
from edgevib.edge.config import load_agent_config
from edgevib.edge.sink import Sink
from edgevib.edge.source import Message, Source

from edgevib.protocol import Topics
from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.frames import Frame, encode
from edgevib.testing import wait_until
from tests.edge.adapters import HARNESSES, MARKS, Harness


def test_every_registered_adapter_is_covered() -> None:
    assert adapters.names("source") == set(HARNESSES) and adapters.names("sink") == set(HARNESSES)


@pytest.fixture(params=[pytest.param(n, marks=MARKS.get(n, [])) for n in sorted(adapters.names("sink"))])
def pair(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = HARNESSES[request.param](request)
    yield h
    for link in h.links:
        link.close()


def _subscriber(pair: Harness, cid: str, topic_filter: str, **kw: object) -> Source:
    link = pair.make(cid, connect=False, **kw)
    link.subscribe(topic_filter)
    pair.start(link)
    return link  # type: ignore[no-any-return]


def _drain(src: Source, n: int, timeout: float = 5.0) -> list[Message]:
    out: list[Message] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        m = src.poll(0.05)
        if m is not None:
            out.append(m)
    return out


def test_wildcard_delivery_in_order_as_plain_messages(pair: Harness) -> None:
    sub = _subscriber(pair, "sub", "s/+/raw")
    pub = pair.make("pub")
    assert isinstance(sub, Source) and isinstance(pub, Sink)
    for i in range(50):
        assert pub.publish(f"s/{i % 3}/raw", bytes([i]), qos=0) == 0
    pub.publish("s/x/other", b"no")  # does not match the filter
    got = _drain(sub, 51, timeout=2.0)
    assert [m.payload for m in got] == [bytes([i]) for i in range(50)]
    assert all(type(m) is Message and isinstance(m.payload, bytes) for m in got)
    assert sub.stats()["received"] == 50


def test_qos1_tokens_are_unique_and_all_acknowledged(pair: Harness) -> None:
    pub = pair.make("pub")
    tokens = [pub.publish("t/a", b"x", qos=1) for _ in range(20)]
    assert None not in tokens and len(set(tokens)) == 20
    acked: list[int] = []
    wait_until(lambda: bool(acked.extend(pub.acked())) or len(acked) == 20, 5, "20 acknowledgements")
    assert sorted(acked) == sorted(t for t in tokens if t is not None)


def test_subscriptions_survive_an_outage_and_offline_publish_is_refused(pair: Harness) -> None:
    sub = _subscriber(pair, "sub", "t/#")
    pub = pair.make("pub")
    pair.outage()
    pub.publish("t/after", b"1", qos=1)
    got = _drain(sub, 1)
    assert [m.topic for m in got] == ["t/after"]
    pair.offline(pub)
    assert pub.publish("t/x", b"2", qos=1) is None


def test_full_inbox_drops_and_counts_without_blocking(pair: Harness) -> None:
    sub = _subscriber(pair, "sub", "f/#", inbox_size=5)
    pub = pair.make("pub")
    for i in range(20):
        pub.publish("f/x", bytes([i]))
    wait_until(lambda: sub.stats()["received"] + sub.stats()["overflow"] == 20, 5, "20 messages counted")
    st = sub.stats()
    assert st["received"] == 5 and st["overflow"] == 15 and st["depth"] == 5
    assert [m.payload for m in _drain(sub, 5)] == [bytes([i]) for i in range(5)]


def test_birth_on_connect_and_offline_on_close_are_retained(pair: Harness) -> None:
    watcher = _subscriber(pair, "w", "gw/status")
    a = pair.make("a", status=("gw/status", b"online", b"offline"))
    assert [m.payload for m in _drain(watcher, 1)] == [b"online"]
    a.close()
    assert [m.payload for m in _drain(watcher, 1)] == [b"offline"]
    late = _subscriber(pair, "late", "gw/status")
    assert [m.payload for m in _drain(late, 1)] == [b"offline"]


def test_the_registry_builds_a_source_that_hands_over_sensor_ids_and_frames(pair: Harness, tmp_path: object) -> None:
    """``[source]``/``[sink]`` through the registry: readings name the sensor and carry the frame's
    bytes; the cloud's messages stay messages; a bad name is refused with a reason to count."""
    cfg = load_agent_config(None, env={}, site="s", gateway="g", **pair.agent_config)
    topics = Topics("s", "g")
    sink, source = adapters.build(cfg, topics)
    src = source if source is not None else TopicSource(sink, topics)  # frames ride the sink (the agent's default)
    sink.subscribe(topics.cmd, qos=1)
    pair.start(sink)
    if source is not None:
        source.start()
    try:
        sensor = pair.make("sensor")
        frames = {name: encode(Frame(i, i * 10**9, 12000.0, np.full(64, i, np.float32))) for i, name in
                  enumerate(("de", "fe"))}
        for name, payload in frames.items():
            sensor.publish(topics.raw(name), payload)
        sensor.publish(topics.cmd, b'{"cmd": "heartbeat"}', qos=1)
        sensor.publish(topics.base + "/sensors/bad name/raw", b"x")
        got: list[Reading | Message | str] = []
        end = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < end:
            try:
                item = src.poll(0.05)
            except ProtocolError as exc:
                got.append(exc.reason)
                continue
            if item is not None:
                got.append(item)
        readings = [g for g in got if isinstance(g, Reading)]
        assert [(r.sensor, r.kind, r.payload) for r in readings] == [(n, "frame", p) for n, p in frames.items()]
        assert [g.topic for g in got if isinstance(g, Message)] == [topics.cmd]
        assert "bad_name" in got and isinstance(sink, Sink)
    finally:
        if source is not None:
            source.close()
        sink.close()
