"""Persistent outbox: reopen, order, bound policy, threads, SIGKILL mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from edgevib.edge.errors import OutboxError, OutboxFullError
from edgevib.edge.outbox import PRIORITY_DATA, PRIORITY_HEARTBEAT, Outbox


def test_order_inflight_ack_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / "ob.sqlite"
    ob = Outbox(db)
    ids = [ob.put(f"t/{i}", f"p{i}".encode(), qos=1) for i in range(5)]
    assert ids == sorted(ids)
    assert [r.topic for r in ob.pending(3)] == ["t/0", "t/1", "t/2"]
    ob.mark_inflight(ids[0])
    ob.mark_inflight(ids[1])
    assert [r.id for r in ob.pending()] == ids[2:]
    assert ob.ack(ids[1]) and not ob.ack(ids[1])
    assert len(ob) == 4
    ob.close()
    ob = Outbox(db)  # restart: the unacked in-flight record is replayed first, in order
    recs = ob.pending()
    assert [r.id for r in recs] == [ids[0], *ids[2:]]
    assert recs[0].payload == b"p0" and recs[0].attempts == 1 and recs[0].qos == 1
    assert len(ob) == 4 and ob.size_bytes == 8
    ob.release(ids[0])
    assert ob.requeue_inflight() == 0
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bound_evicts_lowest_priority_oldest_first(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite", max_rows=4)
    ob.put("d", b"1", priority=PRIORITY_DATA)
    h1 = ob.put("h", b"1", priority=PRIORITY_HEARTBEAT)
    d2 = ob.put("d", b"2", priority=PRIORITY_DATA)
    a1 = ob.put("a", b"1")
    a2 = ob.put("a", b"2")  # full: evicts the oldest data row
    assert [r.id for r in ob.pending()] == [h1, d2, a1, a2] and ob.stats.evicted == 1
    h2 = ob.put("h", b"2", priority=PRIORITY_HEARTBEAT)  # evicts d2 (lower) before h1
    assert [r.id for r in ob.pending()] == [h1, a1, a2, h2]
    h3 = ob.put("h", b"3", priority=PRIORITY_HEARTBEAT)  # same priority: oldest heartbeat goes
    assert [r.id for r in ob.pending()] == [a1, a2, h2, h3]
    with pytest.raises(OutboxFullError):
        ob.put("d", b"3", priority=PRIORITY_DATA)  # nothing lower to evict
    a3 = ob.put("a", b"3")
    a4 = ob.put("a", b"4")
    assert [r.id for r in ob.pending()] == [a1, a2, a3, a4]
    with pytest.raises(OutboxFullError, match="edge.outbox: full .*fix:"):
        ob.put("a", b"5")  # alerts are never evicted: the new one is refused, and counted
    assert ob.stats.refused == 2 and ob.stats.evicted == 5
    assert [r.id for r in ob.pending()] == [a1, a2, a3, a4]


def test_byte_bound_and_refusal_rolls_back(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite", max_bytes=100)
    ob.put("h", b"x" * 40, priority=PRIORITY_HEARTBEAT)
    ob.put("a", b"x" * 40)
    with pytest.raises(OutboxFullError):
        ob.put("d", b"x" * 30, priority=PRIORITY_DATA)
    assert len(ob) == 2 and ob.size_bytes == 80 and ob.stats.evicted == 0
    ob.put("a", b"x" * 50)  # evicts the heartbeat
    assert ob.size_bytes == 90 and [r.topic for r in ob.pending()] == ["a", "a"]
    with pytest.raises(OutboxFullError, match="payload of 101 bytes"):
        ob.put("a", b"x" * 101)
    with pytest.raises(OutboxError, match="qos"):
        ob.put("a", b"", qos=3)


def test_thread_safe_put_and_ack(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite", synchronous="NORMAL")
    acked: list[int] = []

    def acker() -> None:
        deadline = time.monotonic() + 10
        while len(acked) < 400 and time.monotonic() < deadline:
            for r in ob.pending(50):
                ob.mark_inflight(r.id)
                assert ob.ack(r.id)
                acked.append(r.id)

    t = threading.Thread(target=acker)
    t.start()
    for i in range(400):
        ob.put("t", str(i).encode())
    t.join()
    assert sorted(acked) == acked and len(acked) == 400 and len(ob) == 0


_CHILD = """
import sys
from edgevib.edge.outbox import Outbox
ob = Outbox(sys.argv[1], max_rows=300)
i = 0
while True:
    rid = ob.put(f"t/{i}", (f"payload-{i}-" * 20).encode(), priority=i % 3)
    if i % 5 == 0:
        ob.ack(rid - 2)
    print(rid, i, flush=True)
    i += 1
"""


def test_sigkill_mid_writes_leaves_consistent_db(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.split())
        if len(lines) >= 600:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    ob = Outbox(db, max_rows=300)
    recs = ob.pending(10_000)
    assert 0 < len(recs) <= 300 and len(ob) == len(recs)
    by_id = {r.id: r for r in recs}
    assert list(by_id) == sorted(by_id)
    for r in recs:  # every row is whole: payload matches its topic
        i = int(r.topic.split("/")[1])
        assert r.payload == (f"payload-{i}-" * 20).encode() and r.priority == i % 3
    # Alerts (priority 2) reported as committed and never acked are all still there.
    acked = {int(rid) - 2 for rid, i in lines if int(i) % 5 == 0}
    for rid, i in lines:
        if int(i) % 3 == 2 and int(rid) not in acked:
            assert int(rid) in by_id
    ob.put("after", b"restart")
    assert ob.pending(10_000)[-1].topic == "after"


def test_expire_keeps_alerts(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "ob.sqlite", clock=lambda: now[0])
    ob.put("h", b"old", priority=PRIORITY_HEARTBEAT)
    ob.put("a", b"old-alert")
    now[0] = 2000.0
    keep = ob.put("h", b"new", priority=PRIORITY_HEARTBEAT)
    assert ob.expire(500.0) == 1 and ob.stats.expired == 1
    assert [r.payload for r in ob.pending()] == [b"old-alert", b"new"] and len(ob) == 2
    assert ob.expire(500.0, keep_alerts=False) == 1
    assert [r.id for r in ob.pending()] == [keep] and ob.size_bytes == 3


def test_a_full_disk_raises_outbox_error_and_keeps_the_counts_true(tmp_path: Path) -> None:
    """SQLite's page cap stands in for a full disk: the same "database or disk is full" error."""
    ob = Outbox(tmp_path / "ob.sqlite", max_rows=10**6, max_bytes=10**9)
    ob._db.execute("PRAGMA max_page_count = 40")  # a few dozen 4 KiB pages
    stored = 0
    with pytest.raises(OutboxError) as info:  # an OutboxError, never a raw sqlite3 error
        for _ in range(1000):
            ob.put("t", b"x" * 3000)
            stored += 1
    assert not isinstance(info.value, OutboxFullError) and "disk" in str(info.value)
    rows = ob._db.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM outbox").fetchone()
    assert len(ob) == rows[0] == stored and ob.size_bytes == rows[1]
    # space comes back as rows are acknowledged; the counts follow the committed deletes only
    first = ob.pending(1)[0]
    assert ob.ack(first.id) and len(ob) == stored - 1
    ob.put("t", b"y" * 100)
    assert len(ob) == stored == ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
