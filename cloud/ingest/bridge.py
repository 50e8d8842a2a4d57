"""MQTT -> spool bridge: the durable ingest of the cloud job.

Subscribes to every gateway's ``alerts``, ``heartbeat``, ``status``, ``labels``,
``model_status`` and ``indicators`` topics with QoS 1 in a persistent MQTT 5 session (the broker queues messages while the bridge is down),
validates and flattens each message (:func:`edgevib.cloud.ingest.records.normalize`), and writes
batches of CSV lines to the spool directory. A batch goes to a hidden temporary file,
is fsync'ed and renamed to its final name (Flink's file source ignores hidden files and
never sees a file grow), and only then are its messages acknowledged to the broker
(paho ``manual_ack``): a message is either on disk or still queued at the broker. The
session, its worker thread and the acks are :class:`edgevib.cloud.ingest.session.DurableSession`.

Several bridges (``bridge.share_group``): each subscribes through the MQTT 5 shared
subscription ``$share/<group>/...`` under its own ``bridge.client_id`` and writes the same
spool directory (file names and record ids carry a per-process run id); the broker splits
the messages between them. A killed bridge's unacknowledged messages wait in its session
until it restarts under the same client id (Mosquitto 2.0 does not hand them to the
others); redelivered messages written before the kill are deduplicated by id in the store.

A batch is written when it holds ``max_batch`` messages or ``flush_ms`` after its first
message. Files older than ``retention_s`` are deleted.

Bounded (cloud/ingest/spool_guard.py): dead letters per gateway per minute (the rest counted,
one ``rate_limited`` dead letter per gateway per ``dead_summary_s`` carries the count),
and the spool's bytes (``spool_max_bytes``: consumed files go first, then dead letters;
alerts, heartbeats, labels and indicators are always written).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.errors import CloudError
from edgevib.cloud.ingest.records import dead, dumps_line, normalize
from edgevib.cloud.ingest.session import DurableSession, Message, shared
from edgevib.cloud.ingest.spool_guard import (
    DEAD_SHARE,
    SUMMARY_REASON,
    DeadLetterLimiter,
    JobProgress,
    SpoolQuota,
)

from edgevib.protocol import subscription

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".csv"
# model_status: verdicts can come long after `edgevib models push` returned (a rollback in
# probation), so the bridge stores them, not only the pusher.
# indicators: per-sensor condition indicators, published at QoS 0, so delivered at QoS 0
# (the broker does not queue them while the bridge is away: a gap in a trend, never an alert).
BRIDGED_KINDS: tuple[str, ...] = ("alerts", "heartbeat", "status", "labels", "model_status", "indicators")
SHARED_MARGIN_S = 1.0


@dataclass
class BridgeStats:
    received: int = 0
    written: int = 0
    dead: int = 0
    files: int = 0
    deleted_files: int = 0
    connects: int = 0
    dead_suppressed: int = 0  # over the per-gateway rate: counted, not written
    dead_over_quota: int = 0  # dropped because the spool was over spool_max_bytes
    quota_freed_files: int = 0  # consumed spool files deleted early to stay within the quota
    over_quota_writes: int = 0  # batches of alerts etc. written although over quota


class Bridge:
    """Runs in background threads: ``start()``, ``stop()``; counters in ``stats``."""

    def __init__(self, cfg: CloudConfig, *, clock: Callable[[], float] = time.time,
                 consumed_before: Callable[[], float | None] | None = None) -> None:
        self.cfg = cfg
        self.bcfg = cfg.bridge
        self.clock = clock
        self.spool = Path(cfg.spool_dir)
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CloudError("cloud.bridge", f"spool_dir={str(self.spool)!r}: {exc}",
                             "use a writable directory") from exc
        self._stats = BridgeStats()
        # Unique per process: several bridges (bridge.share_group) write one spool directory,
        # and record ids / file names must not collide even if two start in the same ms.
        self._run = f"{int(clock() * 1000):x}{secrets.token_hex(2)}"
        self._seq = 0
        self._file_seq = 0
        self._last_cleanup = 0.0
        b = self.bcfg
        self.limiter = DeadLetterLimiter(b.dead_letters_per_min, b.dead_letters_total_per_min, b.dead_summary_s,
                                         clock=clock)
        self._progress = JobProgress(cfg.store_url, cfg.checkpoint_dir) if consumed_before is None else None
        # Shared: another bridge's file written in the same millisecond may sort after ours
        # (names are <ms>-<run>-<seq>), and clocks of bridge pods differ a little, so
        # "consumed" keeps a margin of a second.
        self.quota = SpoolQuota(self.spool, b.spool_max_bytes, consumed_before or self._progress,  # type: ignore[arg-type]
                                suffix=SPOOL_SUFFIX, margin_s=SHARED_MARGIN_S if b.share_group else 0.0)
        subs = [(shared(subscription(k, prefix=b.topic_prefix), b.share_group), 1) for k in BRIDGED_KINDS]
        self.session = DurableSession(
            broker_url=cfg.broker_url, client_id=b.client_id, subscriptions=subs, handle=self._handle,
            component="cloud.bridge", max_batch=b.max_batch, flush_s=b.flush_ms / 1000, receive_maximum=65535,
            on_connect=self._on_connect, fair_key=gateway_of, clock=clock)
        self.client = self.session.client

    @property
    def stats(self) -> BridgeStats:
        self._stats.received = self.session.received
        return self._stats

    def _on_connect(self, session_present: bool) -> None:
        self._stats.connects += 1

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect (persistent session) and start the network and writer threads."""
        self.session.start(timeout)

    def stop(self) -> None:
        """Write what is pending, then disconnect (the session stays at the broker)."""
        self.session.stop()
        if self._progress is not None:
            self._progress.close()

    def __enter__(self) -> Bridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- worker thread ------------------------------------------------------------------------
    def _handle(self, batch: list[Message], final: bool) -> bool:
        """Write ``batch`` to a spool file (OSError: nothing acked, the session reconnects)."""
        if batch or self.limiter.due_soon(force=final):
            self._write(batch, final=final)
        if self.clock() - self._last_cleanup > 5:
            self._cleanup()
        return True

    def _write(self, batch: list[Message], *, final: bool = False) -> None:
        lines: list[bytes] = []
        dead_recs: list[dict[str, object]] = []
        for topic, payload, recv_ms, _, _ in batch:
            self._seq += 1
            rec = normalize(topic, payload, recv_ms, f"{self._run}-{self._seq}", self.bcfg.topic_prefix)
            if rec["kind"] != "dead":
                lines.append(dumps_line(rec))
            elif self.limiter.allow(f"{rec['site']}/{rec['gateway']}", recv_ms / 1000):
                dead_recs.append(rec)
            else:
                self.stats.dead_suppressed += 1
        summaries = []
        for key, n, first_ms, last_ms in self.limiter.due(force=final):
            self._seq += 1
            site, _, gateway = key.partition("/")
            summaries.append(dumps_line(dead(
                f"{self.bcfg.topic_prefix}/{key or '?'}", b"", last_ms, f"{self._run}-{self._seq}", SUMMARY_REASON,
                f"{n} dead letters from {key or 'unparseable topics'} not stored between {first_ms} and {last_ms} ms "
                f"(over bridge.dead_letters_per_min={self.bcfg.dead_letters_per_min:g}); fix: repair or block the publisher",
                site, gateway)))
        need = sum(map(len, lines)) + sum(map(len, summaries))
        # Dead letters in arrival order while they fit in DEAD_SHARE of the quota (consumed
        # files are freed on the way); the rest are dropped, counted, before paying for their
        # CSV: under a flood that is most of the bridge's time per message.
        dead_lines: list[bytes] = []
        total = need
        for rec in dead_recs:
            line = dumps_line(rec)
            total += len(line)
            if not self.quota.make_room(total, DEAD_SHARE):
                break
            dead_lines.append(line)
        if len(dead_lines) < len(dead_recs):
            self.stats.dead_over_quota += len(dead_recs) - len(dead_lines)
            log.warning("bridge: spool over bridge.spool_max_bytes=%d: %d dead letters dropped",
                        self.bcfg.spool_max_bytes, len(dead_recs) - len(dead_lines))
        if need and not dead_lines and not self.quota.make_room(need):
            self.stats.over_quota_writes += 1
            log.error("bridge: spool over bridge.spool_max_bytes=%d and nothing consumed to delete; writing %d "
                      "records anyway (alerts are never dropped); is the job running?", self.bcfg.spool_max_bytes,
                      len(lines))
        self.stats.quota_freed_files = self.quota.freed_files
        lines += summaries + dead_lines
        self.stats.dead += len(summaries) + len(dead_lines)
        self.stats.written += len(batch)
        if not lines:
            return  # every message was a suppressed dead letter: nothing to write, all to ack
        self._file_seq += 1
        # Name order is write order, across bridges too (to the millisecond; the job reads in name order).
        now = self.clock()
        stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}{int(now * 1000) % 1000:03d}"
        name = f"{stamp}-{self._run}-{self._file_seq:08d}{SPOOL_SUFFIX}"
        tmp = self.spool / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.spool / name)
        self.quota.added(sum(map(len, lines)))
        dfd = os.open(self.spool, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself must survive a crash before we ack
        finally:
            os.close(dfd)
        self.stats.files += 1

    def _cleanup(self) -> None:
        self._last_cleanup = self.clock()
        cutoff = time.time() - self.bcfg.retention_s
        for p in self.spool.glob(f"*{SPOOL_SUFFIX}"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    self.stats.deleted_files += 1
            except FileNotFoundError:
                pass
        self.quota.rescan()


def gateway_of(topic: str) -> str:
    """The fairness key of a message: its topic without the last level (``<prefix>/<site>/<gateway>``).

    >>> gateway_of("edgevib/v1/plant/gw1/alerts")
    'edgevib/v1/plant/gw1'
    """
    return topic.rpartition("/")[0]


def run_bridge(cfg: CloudConfig, stop: threading.Event) -> BridgeStats:
    """Run until ``stop`` is set (the CLI sets it on Ctrl-C)."""
    bridge = Bridge(cfg)
    bridge.start()
    log.info("bridge: ready as %r (share group %r), spool %s", cfg.bridge.client_id, cfg.bridge.share_group,
             bridge.spool)
    try:
        while not stop.wait(10):
            s = bridge.stats
            log.info("bridge: received %d written %d dead %d (suppressed %d, over quota %d) files %d, spool %d bytes",
                     s.received, s.written, s.dead, s.dead_suppressed, s.dead_over_quota, s.files, bridge.quota.used)
    finally:
        bridge.stop()
    return bridge.stats
