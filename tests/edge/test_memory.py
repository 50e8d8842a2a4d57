"""The in-memory bus: what it adds beyond the shared contract (held acks, last-will)."""

from __future__ import annotations

from edgevib.edge.memory import MemoryBus, MemoryLink


def test_held_acks_are_released_by_ack_all_and_resent_after_outage() -> None:
    bus = MemoryBus(auto_ack=False)
    pub, sub = MemoryLink(bus, "pub"), MemoryLink(bus, "sub")
    sub.subscribe("a/#")
    t1 = pub.publish("a/1", b"x", qos=1)
    assert t1 is not None and pub.acked() == []
    bus.disconnect_all()
    assert pub.publish("a/2", b"y", qos=1) is None
    bus.auto_ack = True
    sub.reconnect()
    pub.reconnect()  # re-sends the unacknowledged message, which is now acknowledged
    assert pub.acked() == [t1]
    got = [m.payload for m in iter(lambda: sub.poll(0), None)]
    assert got == [b"x", b"x"]  # at-least-once: the first copy plus the re-send


def test_die_publishes_will_but_close_is_clean_offline() -> None:
    bus = MemoryBus()
    watcher = MemoryLink(bus, "w")
    watcher.subscribe("st")
    a = MemoryLink(bus, "a", status=("st", b"online", b"offline"))
    a.die()
    b = MemoryLink(bus, "b", status=("st", b"online", b"offline"))
    b.close()
    assert [m.payload for m in iter(lambda: watcher.poll(0), None)] == [b"online", b"offline", b"online", b"offline"]
    assert bus.retained["st"] == b"offline"


def test_retained_message_reaches_late_subscriber() -> None:
    bus = MemoryBus()
    MemoryLink(bus, "p").publish("cfg", b"v1", retain=True)
    late = MemoryLink(bus, "late")
    late.subscribe("+")
    m = late.poll(0)
    assert m is not None and (m.topic, m.payload) == ("cfg", b"v1")
