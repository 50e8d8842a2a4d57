"""One contract suite, run over every registered source/sink (memory, and MQTT on a real broker)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.mqtt import MqttLink
from edgevib.edge.sink import SINKS, Sink
from edgevib.edge.source import SOURCES, Message, Source


@dataclass
class Pair:
    make: Callable[..., MemoryLink | MqttLink]  # make(client_id, **options), connected
    outage: Callable[[], None]  # the medium goes away and comes back
    links: list[MemoryLink | MqttLink]


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _memory(request: pytest.FixtureRequest) -> Pair:
    bus = MemoryBus()
    links: list[MemoryLink | MqttLink] = []

    def make(cid: str, **kw: object) -> MemoryLink:
        link = MemoryLink(bus, cid, **kw)  # type: ignore[arg-type]
        links.append(link)
        return link

    def outage() -> None:
        bus.disconnect_all()
        for link in links:
            assert isinstance(link, MemoryLink)
            link.reconnect()

    return Pair(make, outage, links)


def _mqtt(request: pytest.FixtureRequest) -> Pair:
    broker = request.getfixturevalue("broker")
    links: list[MemoryLink | MqttLink] = []

    def make(cid: str, **kw: object) -> MqttLink:
        link = MqttLink(broker.url, cid, reconnect=(1, 1), **kw)  # type: ignore[arg-type]
        links.append(link)
        if kw.get("connect", True):
            assert link.wait_connected(5), "could not connect to the private broker"
        return link

    def outage() -> None:
        broker.stop()
        assert _wait(lambda: not any(x.connected for x in links))
        broker.start()
        assert _wait(lambda: all(x.connected for x in links), 10), "links did not reconnect"

    return Pair(make, outage, links)


BUILDERS: dict[str, Callable[[pytest.FixtureRequest], Pair]] = {"memory": _memory, "mqtt": _mqtt}


def test_every_registered_adapter_is_covered() -> None:
    assert set(SOURCES) == set(BUILDERS) and set(SINKS) == set(BUILDERS)


@pytest.fixture(params=[pytest.param("memory"), pytest.param("mqtt", marks=pytest.mark.integration)])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    p = BUILDERS[request.param](request)
    yield p
    for link in p.links:
        link.close()


def _subscriber(pair: Pair, cid: str, topic_filter: str, **kw: object) -> Source:
    link = pair.make(cid, connect=False, **kw)
    link.subscribe(topic_filter)
    if isinstance(link, MemoryLink):
        link.reconnect()
    else:
        link.start()
        assert link.wait_connected(5)
    return link


def _drain(src: Source, n: int, timeout: float = 5.0) -> list[Message]:
    out: list[Message] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        m = src.poll(0.05)
        if m is not None:
            out.append(m)
    return out


def test_wildcard_delivery_in_order_as_plain_messages(pair: Pair) -> None:
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


def test_qos1_tokens_are_unique_and_all_acknowledged(pair: Pair) -> None:
    pub = pair.make("pub")
    tokens = [pub.publish("t/a", b"x", qos=1) for _ in range(20)]
    assert None not in tokens and len(set(tokens)) == 20
    acked: list[int] = []
    assert _wait(lambda: bool(acked.extend(pub.acked())) or len(acked) == 20)
    assert sorted(acked) == sorted(t for t in tokens if t is not None)


def test_subscriptions_survive_an_outage_and_offline_publish_is_refused(pair: Pair) -> None:
    sub = _subscriber(pair, "sub", "t/#")
    pub = pair.make("pub")
    pair.outage()
    pub.publish("t/after", b"1", qos=1)
    got = _drain(sub, 1)
    assert [m.topic for m in got] == ["t/after"]
    if isinstance(pub, MemoryLink):
        pub.connected = False  # memory: take only this link offline
    else:
        pub.close()
    assert pub.publish("t/x", b"2", qos=1) is None


def test_full_inbox_drops_and_counts_without_blocking(pair: Pair) -> None:
    sub = _subscriber(pair, "sub", "f/#", inbox_size=5)
    pub = pair.make("pub")
    for i in range(20):
        pub.publish("f/x", bytes([i]))
    assert _wait(lambda: sub.stats()["received"] + sub.stats()["overflow"] == 20)
    st = sub.stats()
    assert st["received"] == 5 and st["overflow"] == 15 and st["depth"] == 5
    assert [m.payload for m in _drain(sub, 5)] == [bytes([i]) for i in range(5)]


def test_birth_on_connect_and_offline_on_close_are_retained(pair: Pair) -> None:
    watcher = _subscriber(pair, "w", "gw/status")
    a = pair.make("a", status=("gw/status", b"online", b"offline"))
    assert [m.payload for m in _drain(watcher, 1)] == [b"online"]
    a.close()
    assert [m.payload for m in _drain(watcher, 1)] == [b"offline"]
    late = _subscriber(pair, "late", "gw/status")
    assert [m.payload for m in _drain(late, 1)] == [b"offline"]
