"""Bounds on what one gateway can make the bridge write: dead-letter rate and spool disk quota.

* :class:`DeadLetterLimiter`: a token bucket per gateway (and one for all gateways
  together). A dead letter beyond the rate is not written but counted; every
  ``summary_s`` each gateway with suppressed dead letters gets one ``rate_limited`` dead
  letter carrying the count, so ``edgevib cloud status`` still shows the flood.
* :class:`SpoolQuota`: the spool directory's byte budget. Over it, files the job has
  consumed (:class:`JobProgress`) are deleted oldest first; if that is not enough, the
  batch's dead letters are dropped (counted). Dead letters may fill :data:`DEAD_SHARE` of
  the quota; the rest is kept for the records that matter. Alerts, heartbeats, labels and indicators
  are always written, even over quota (logged).

>>> lim = DeadLetterLimiter(per_min=2, total_per_min=100, summary_s=60, clock=lambda: 0.0)
>>> [lim.allow("p1/g1") for _ in range(4)], lim.suppressed_total
([True, True, False, False], 2)
>>> [(k, n) for k, n, _, _ in lim.due(now=61.0)]
[('p1/g1', 2)]
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Gateways whose buckets are kept; the least recently seen beyond this are forgotten
# (their suppressed count is reported first), so invented gateway names cannot grow memory.
MAX_TRACKED = 4096
SUMMARY_REASON = "rate_limited"
# Dead letters are written only while the spool stays under this share of its quota.
DEAD_SHARE = 0.9


@dataclass
class _Bucket:
    tokens: float
    t: float
    suppressed: int = 0
    first_ms: int = 0
    last_ms: int = 0


class DeadLetterLimiter:
    """Token buckets: ``per_min`` per gateway key, ``total_per_min`` over all keys; each holds a minute's worth."""

    def __init__(self, per_min: float, total_per_min: float, summary_s: float, *,
                 clock: Callable[[], float] = time.time, max_tracked: int = MAX_TRACKED) -> None:
        self.rate, self.total_rate, self.summary_s = per_min / 60.0, total_per_min / 60.0, summary_s
        self.clock, self.max_tracked = clock, max_tracked
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._total = _Bucket(total_per_min, clock())
        self._evicted: list[tuple[str, int, int, int]] = []
        self._last_summary = clock()
        self.suppressed_total = 0  # since start, over all gateways
        self.allowed_total = 0

    @staticmethod
    def _take(b: _Bucket, rate: float, cap: float, now: float) -> bool:
        b.tokens = min(cap, b.tokens + (now - b.t) * rate)
        b.t = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False

    def allow(self, key: str, now: float | None = None) -> bool:
        """One dead letter from gateway ``key`` (``site/gateway``, '' when the topic names none): write it?"""
        now = self.clock() if now is None else now
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(self.rate * 60, now)
            if len(self._buckets) > self.max_tracked:
                old_key, old = self._buckets.popitem(last=False)
                if old.suppressed:
                    self._evicted.append((old_key, old.suppressed, old.first_ms, old.last_ms))
        else:
            self._buckets.move_to_end(key)
        # The gateway's own bucket first: a flooding gateway does not spend the shared one.
        if self._take(b, self.rate, self.rate * 60, now) and self._take(self._total, self.total_rate,
                                                                        self.total_rate * 60, now):
            self.allowed_total += 1
            return True
        ms = int(now * 1000)
        if not b.suppressed:
            b.first_ms = ms
        b.suppressed += 1
        b.last_ms = ms
        self.suppressed_total += 1
        return False

    def due_soon(self, now: float | None = None, *, force: bool = False) -> bool:
        """Would :meth:`due` return something now (the writer calls it when no message came)?"""
        if self._evicted:
            return True
        now = self.clock() if now is None else now
        if not (force or now - self._last_summary >= self.summary_s):
            return False
        return any(b.suppressed for b in self._buckets.values())

    def due(self, now: float | None = None, *, force: bool = False) -> list[tuple[str, int, int, int]]:
        """Every ``summary_s`` (or when ``force``): (key, suppressed, first_ms, last_ms) per gateway, then reset."""
        now = self.clock() if now is None else now
        if not force and now - self._last_summary < self.summary_s and not self._evicted:
            return []
        out, self._evicted = self._evicted, []
        if force or now - self._last_summary >= self.summary_s:
            self._last_summary = now
            for key, b in self._buckets.items():
                if b.suppressed:
                    out.append((key, b.suppressed, b.first_ms, b.last_ms))
                    b.suppressed = 0
        return out


def spool_files(spool: Path, suffix: str) -> list[tuple[str, int, float]]:
    """(name, bytes, mtime) of the spool's files (hidden temporaries excluded), oldest name first."""
    out = []
    for p in spool.glob(f"*{suffix}"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((p.name, st.st_size, st.st_mtime))
    return sorted(out)


class SpoolQuota:
    """Bytes used by the spool directory against ``max_bytes``; frees consumed files on demand.

    ``consumed_before`` returns a wall-clock time (s): files last written before it have
    been read by the job and are covered by a completed checkpoint, so deleting them loses
    nothing, even on a restart from that checkpoint. ``None``: nothing is known to be
    consumed (no job yet), nothing is deleted early.
    """

    def __init__(self, spool: Path, max_bytes: int, consumed_before: Callable[[], float | None], *,
                 suffix: str = ".csv", margin_s: float = 0.0) -> None:
        self.spool, self.max_bytes, self.consumed_before, self.suffix = Path(spool), max_bytes, consumed_before, suffix
        self.margin_s = margin_s  # several writers: only files older than consumed_before - margin_s go
        self.used = 0
        self.freed_files = 0
        self.freed_bytes = 0
        self.rescan()

    def rescan(self) -> int:
        self.used = sum(n for _, n, _ in spool_files(self.spool, self.suffix))
        return self.used

    def fits(self, nbytes: int, share: float = 1.0) -> bool:
        return self.used + nbytes <= self.max_bytes * share

    def make_room(self, nbytes: int, share: float = 1.0) -> bool:
        """Delete consumed files, oldest first, until ``nbytes`` more fit in ``share`` of the quota; True if they do."""
        if self.fits(nbytes, share):
            return True
        self.rescan()
        if self.fits(nbytes, share):
            return True
        try:
            before = self.consumed_before()
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop ingest
            log.warning("spool quota: cannot tell what the job consumed (%s); deleting nothing", exc)
            before = None
        if before is None:
            return False
        before -= self.margin_s
        for name, size, mtime in spool_files(self.spool, self.suffix):
            if self.fits(nbytes, share) or mtime >= before:
                break  # name order is write order: later files are not consumed either
            try:
                (self.spool / name).unlink()
            except FileNotFoundError:
                continue
            self.used -= size
            self.freed_files += 1
            self.freed_bytes += size
        return self.fits(nbytes, share)

    def added(self, nbytes: int) -> None:
        self.used += nbytes


class JobProgress:
    """When the job has consumed spool files up to: from its checkpoints and the store.

    A file is consumed when a record the bridge received after the file was written is in
    the store (files are read one at a time in name order, so the file was read whole)
    and a checkpoint completed after that record was stored (a restart from it does not
    re-read the file). Dead letters and alerts carry ``recv_ms`` and ``stored_ms``.
    """

    def __init__(self, store_url: str, checkpoint_dir: Path) -> None:
        self.store_url, self.checkpoint_dir = store_url, Path(checkpoint_dir)
        self._store: object | None = None

    def __call__(self) -> float | None:
        from edgevib.cloud.flink.job import latest_checkpoint  # noqa: PLC0415 - no Flink import at module load
        from edgevib.cloud.store import Store  # noqa: PLC0415

        chk = latest_checkpoint(self.checkpoint_dir)
        if chk is None:
            return None
        chk_ms = int((chk / "_metadata").stat().st_mtime * 1000)
        if self._store is None:
            self._store = Store(self.store_url)
        store: Store = self._store  # type: ignore[assignment]
        best: int | None = None
        for table in ("dead_letters", "alerts"):
            rows = store.query(f"SELECT recv_ms FROM {table} WHERE stored_ms <= ? ORDER BY recv_ms DESC LIMIT 1",
                               (chk_ms,))
            if rows and rows[0][0] is not None:
                best = max(best or 0, int(rows[0][0]))
        return None if best is None else best / 1000.0

    def close(self) -> None:
        if self._store is not None:
            self._store.close()  # type: ignore[attr-defined]
            self._store = None
