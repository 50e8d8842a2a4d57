"""DurableSession's inbox without a broker: batches, order per key, fair share under a flood."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from edgevib.cloud.ingest.bridge import gateway_of
from edgevib.cloud.ingest.session import DurableSession, Message


def _session(max_batch: int, fair: bool) -> DurableSession:
    return DurableSession(broker_url="mqtt://127.0.0.1:1", client_id="t", subscriptions=[("#", 1)],
                          handle=lambda b, f: True, component="test", max_batch=max_batch, flush_s=0.0,
                          fair_key=gateway_of if fair else None, clock=lambda: 1.0)


def _put(s: DurableSession, topic: str, n: int, start: int = 0) -> None:
    for i in range(n):
        s._on_message(None, None, SimpleNamespace(topic=topic, payload=str(start + i).encode(), mid=start + i, qos=1))


def _take(s: DurableSession) -> list[Message]:
    s._stop.set()  # _take must not wait
    return s._take()


@pytest.mark.parametrize("fair", [False, True])
def test_one_key_is_fifo_in_batches_of_max_batch(fair: bool) -> None:
    s = _session(4, fair)
    _put(s, "p/s/g/alerts", 10)
    got = [[int(m.payload) for m in _take(s)] for _ in range(3)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and s._npending == 0


def test_a_flooding_gateway_does_not_delay_the_others_by_more_than_a_batch() -> None:
    s = _session(100, fair=True)
    _put(s, "p/s/flood/alerts", 10_000)
    _put(s, "p/s/good/alerts", 3, start=10_000)
    _put(s, "p/s/other/heartbeat", 1, start=20_000)
    first = _take(s)
    assert len(first) == 100
    assert {int(m.payload) for m in first} >= {10_000, 10_001, 10_002, 20_000}, "the small queues go first"
    flood = [int(m.payload) for m in first if m.topic.startswith("p/s/flood")]
    assert flood == list(range(96)), "the flood keeps its order and gets the rest of the batch"
    assert s._npending == 10_000 - 96


def test_without_fair_key_a_flood_delays_everything_behind_it() -> None:
    s = _session(100, fair=False)
    _put(s, "p/s/flood/alerts", 1000)
    _put(s, "p/s/good/alerts", 1, start=5000)
    assert all(m.topic.startswith("p/s/flood") for m in _take(s))
