"""The agent's inbox: bounded by count and bytes, fair to topics, every message accounted for."""

from __future__ import annotations

import random
import threading
import time

from edgevib.edge.source import MESSAGE_OVERHEAD, Inbox, Message


def _msg(topic: str, n: int = 100) -> Message:
    return Message(topic, bytes(n), 0.0)


def test_a_flooding_topic_cannot_crowd_out_or_delay_another() -> None:
    box = Inbox(maxsize=1000, max_bytes=50 * (1000 + MESSAGE_OVERHEAD + 20))
    flood = [box.put(_msg("s/flood/raw", 1000)) for _ in range(500)]
    assert sum(flood) == 50 and box.overflow_bytes == 450  # alone, it may use the whole budget
    assert box.put(_msg("s/good/raw", 1000)) and box.evicted == 1  # the longest backlog pays
    got = [box.poll(0).topic for _ in range(2)]  # type: ignore[union-attr]
    assert "s/good/raw" in got  # not behind the flood's 49 queued messages


def test_round_robin_keeps_each_topics_order() -> None:
    box = Inbox(maxsize=100)
    for i in range(10):
        box.put(Message("a", bytes([i]), 0.0))
    for i in range(3):
        box.put(Message("b", bytes([i]), 0.0))
    got = [box.poll(0) for _ in range(13)]
    assert [m.topic for m in got[:6]] == ["a", "b"] * 3  # type: ignore[union-attr]
    assert [m.payload[0] for m in got if m.topic == "a"] == list(range(10))  # type: ignore[union-attr]
    assert box.poll(0) is None and box.depth() == 0 and box.bytes == 0


def test_the_longest_backlog_drops_its_own_new_message() -> None:
    box = Inbox(maxsize=4)
    for t in ("a", "a", "a", "b"):
        assert box.put(_msg(t))
    assert not box.put(_msg("a")) and box.overflow == 1 and box.evicted == 0
    assert box.put(_msg("c")) and box.evicted == 1  # a's oldest made room


def test_every_message_is_received_or_a_counted_drop_whatever_the_mix() -> None:
    rng = random.Random(7)
    box = Inbox(maxsize=40, max_bytes=30_000, max_message=2_000)
    handed = polled = 0
    for _ in range(5_000):
        if rng.random() < 0.6:
            topic = "flood" if rng.random() < 0.7 else f"s{rng.randrange(8)}"
            box.put(_msg(topic, rng.choice((10, 500, 1_500, 2_500))))
            handed += 1
        elif box.poll(0) is not None:
            polled += 1
        assert box.depth() <= 40 and box.bytes <= 30_000
    while box.poll(0) is not None:
        polled += 1
    st = box.stats()
    assert handed == st["received"] + st["overflow"] + st["overflow_bytes"] + st["too_large"]
    assert polled == st["received"] and st["evicted"] > 0 and st["bytes"] == 0


def test_poll_waits_for_a_put_from_another_thread() -> None:
    box = Inbox()
    threading.Timer(0.05, lambda: box.put(_msg("late"))).start()
    t0 = time.monotonic()
    m = box.poll(5.0)
    assert m is not None and m.topic == "late" and time.monotonic() - t0 < 4.0
    assert box.poll(0.01) is None
