"""Persistent outbox: messages survive broker outages and agent restarts (SQLite, WAL).

Durability: WAL with ``synchronous=FULL`` by default. A crash of the process never
loses a committed row in WAL mode whatever the setting; FULL also survives power
loss (NORMAL may lose the last commits). Alerts are rare, so the extra fsync per
commit is cheap; pass ``synchronous="NORMAL"`` for high-rate low-value traffic.

Bound policy, when a put would exceed ``max_rows`` or ``max_bytes``: evict rows of
lower priority, lowest priority and oldest first; rows of the *same* priority are
evicted too, except alerts (:data:`PRIORITY_ALERT`), which are never evicted: if
only alerts stand in the way, the new record is refused with
:class:`OutboxFullError` and counted in ``stats.refused``.

>>> ob = Outbox(":memory:")
>>> i = ob.put("t/alerts", b"{}", qos=1)
>>> [r.id for r in ob.pending()] == [i]
True
>>> ob.ack(i); len(ob)
True
0
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgevib.edge.errors import OutboxError, OutboxFullError

log = logging.getLogger(__name__)

PRIORITY_DATA = 0
PRIORITY_HEARTBEAT = 1
PRIORITY_ALERT = 2
PENDING, INFLIGHT = 0, 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (priority, id);
"""


@dataclass(frozen=True)
class Record:
    id: int
    topic: str
    payload: bytes
    qos: int
    priority: int
    created: float
    attempts: int


@dataclass
class OutboxStats:
    put: int = 0
    acked: int = 0
    evicted: int = 0
    refused: int = 0
    expired: int = 0


class Outbox:
    """A bounded, ordered, thread-safe queue of MQTT messages on disk."""

    def __init__(self, path: str | Path, *, max_rows: int = 100_000, max_bytes: int = 64 * 2**20,
                 synchronous: str = "FULL", clock: Callable[[], float] = time.time) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise OutboxError("edge.outbox", f"max_rows={max_rows}, max_bytes={max_bytes}", "use positive bounds")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise OutboxError("edge.outbox", f"synchronous={synchronous!r}", "use NORMAL, FULL or EXTRA")
        self.path, self.max_rows, self.max_bytes, self.clock = str(path), max_rows, max_bytes, clock
        self.stats = OutboxStats()
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # The MQTT thread acks while the agent thread puts: one connection, one lock.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            # Nothing in flight survives a restart: unacknowledged rows are sent again, in order.
            self._db.execute("UPDATE outbox SET state=? WHERE state=?", (PENDING, INFLIGHT))
            self._rows, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError("edge.outbox", f"cannot open {self.path!r} ({exc})",
                              "point outbox_path at a writable file on a local disk") from exc

    def __len__(self) -> int:
        return int(self._rows)

    @property
    def size_bytes(self) -> int:
        return int(self._bytes)

    def put(self, topic: str, payload: bytes, qos: int = 1, priority: int = PRIORITY_ALERT) -> int:
        """Store one message; return its id. May evict lower-priority rows (see module doc)."""
        if qos not in (0, 1, 2):
            raise OutboxError("edge.outbox", f"qos={qos}", "use 0, 1 or 2")
        size = len(payload)
        if size > self.max_bytes:
            self.stats.refused += 1
            raise OutboxFullError("edge.outbox", f"payload of {size} bytes > max_bytes={self.max_bytes}",
                                  "raise outbox max_bytes or send smaller messages")
        with self._lock:
            # A refused put rolls its evictions back: restore the counters with them.
            before = (self._rows, self._bytes, self.stats.evicted)
            try:
                with self._tx():
                    self._make_room(size, priority)
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, qos, priority, created) VALUES (?, ?, ?, ?, ?)",
                        (topic, bytes(payload), qos, priority, self.clock()))
            except Exception:
                self._rows, self._bytes, self.stats.evicted = before
                raise
            self._rows += 1
            self._bytes += size
            self.stats.put += 1
            return int(cur.lastrowid or 0)

    def _make_room(self, size: int, priority: int) -> None:
        while self._rows + 1 > self.max_rows or self._bytes + size > self.max_bytes:
            limit = priority if priority >= PRIORITY_ALERT else priority + 1
            row = self._db.execute(
                "SELECT id, LENGTH(payload) FROM outbox WHERE priority < ? ORDER BY priority, id LIMIT 1",
                (limit,)).fetchone()
            if row is None:
                self.stats.refused += 1
                raise OutboxFullError(
                    "edge.outbox",
                    f"full ({self._rows} rows, {self._bytes} bytes) of records with priority >= {priority}",
                    "restore the broker link so alerts drain, or raise outbox max_rows/max_bytes")
            self._db.execute("DELETE FROM outbox WHERE id=?", (row[0],))
            self._rows -= 1
            self._bytes -= row[1]
            self.stats.evicted += 1
            log.warning("outbox full: evicted record %d", row[0])

    def pending(self, limit: int = 100) -> list[Record]:
        """Up to ``limit`` not-in-flight records, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, priority, created, attempts FROM outbox "
                "WHERE state=? ORDER BY id LIMIT ?", (PENDING, limit)).fetchall()
        return [Record(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def mark_inflight(self, record_id: int) -> None:
        """The record was handed to the MQTT client; it stays stored until :meth:`ack`."""
        with self._lock, self._tx():
            self._db.execute("UPDATE outbox SET state=?, attempts=attempts+1 WHERE id=?", (INFLIGHT, record_id))

    def release(self, record_id: int) -> None:
        """Send failed: make the record pending again (it keeps its place in the order)."""
        with self._lock, self._tx():
            self._db.execute("UPDATE outbox SET state=? WHERE id=?", (PENDING, record_id))

    def requeue_inflight(self) -> int:
        """After a reconnect: every in-flight record becomes pending again; returns how many."""
        with self._lock, self._tx():
            return self._db.execute("UPDATE outbox SET state=? WHERE state=?", (PENDING, INFLIGHT)).rowcount

    def ack(self, record_id: int) -> bool:
        """The broker acknowledged the record: delete it. False if it was already gone."""
        with self._lock:
            with self._tx():
                row = self._db.execute("SELECT LENGTH(payload) FROM outbox WHERE id=?", (record_id,)).fetchone()
                if row is None:
                    return False
                self._db.execute("DELETE FROM outbox WHERE id=?", (record_id,))
            # counted only once the delete is committed (a full disk can fail the commit)
            self._rows -= 1
            self._bytes -= row[0]
            self.stats.acked += 1
            return True

    def expire(self, max_age_s: float, keep_alerts: bool = True) -> int:
        """Delete records older than ``max_age_s`` (alerts kept unless ``keep_alerts`` is False)."""
        cutoff = self.clock() - max_age_s
        top = PRIORITY_ALERT if keep_alerts else PRIORITY_ALERT + 1
        with self._lock:
            with self._tx():
                gone = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE created < ? AND priority < ?",
                    (cutoff, top)).fetchone()
                self._db.execute("DELETE FROM outbox WHERE created < ? AND priority < ?", (cutoff, top))
            self._rows -= gone[0]
            self._bytes -= gone[1]
            self.stats.expired += gone[0]
            return int(gone[0])

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; SQLite errors become OutboxError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError("edge.outbox", f"cannot write ({exc})", "check disk space and permissions") from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._rollback()
                raise OutboxError("edge.outbox", f"commit failed ({err})", "check disk space") from err
        self._rollback()
        if isinstance(exc, sqlite3.Error):  # e.g. "database or disk is full" inside the transaction
            raise OutboxError("edge.outbox", f"cannot write ({exc})", "check disk space and permissions") from exc

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:  # SQLite already rolled back (disk full, I/O error): nothing to undo
            pass
