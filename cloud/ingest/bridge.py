"""MQTT -> spool bridge: the durable ingest of the cloud job.

Subscribes to every gateway's ``alerts``, ``heartbeat``, ``status``, ``labels``,
``model_status`` and ``indicators`` topics with QoS 1 in a persistent MQTT 5 session (the broker queues messages while the bridge is down),
validates and flattens each message (:func:`edgevib.cloud.ingest.records.normalize`), and writes
batches of CSV lines to the spool directory. A batch goes to a hidden temporary file,
is fsync'ed and renamed to its final name (Flink's file source ignores hidden files and
never sees a file grow), and only then are its messages acknowledged to the broker
(paho ``manual_ack``): a message is either on disk or still queued at the broker.

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.errors import CloudError, CloudRetryableError
from edgevib.cloud.ingest.records import dead, dumps_line, normalize
from edgevib.cloud.ingest.spool_guard import (
    DEAD_SHARE,
    SUMMARY_REASON,
    DeadLetterLimiter,
    JobProgress,
    SpoolQuota,
)

from edgevib.broker import parse_url
from edgevib.extras import require
from edgevib.protocol import subscription

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".csv"
# model_status: verdicts can come long after `edgevib models push` returned (a rollback in
# probation), so the bridge stores them, not only the pusher.
# indicators: per-sensor condition indicators, published at QoS 0, so delivered at QoS 0
# (the broker does not queue them while the bridge is away: a gap in a trend, never an alert).
BRIDGED_KINDS: tuple[str, ...] = ("alerts", "heartbeat", "status", "labels", "model_status", "indicators")


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
        self.mqtt = require("paho.mqtt.client", extra="cloud", feature="cloud bridge")
        self.cfg = cfg
        self.bcfg = cfg.bridge
        self.clock = clock
        self.spool = Path(cfg.spool_dir)
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CloudError("cloud.bridge", f"spool_dir={str(self.spool)!r}: {exc}",
                             "use a writable directory") from exc
        self.host, self.port, self.tls = parse_url(cfg.broker_url)
        self.stats = BridgeStats()
        self._run = f"{int(clock() * 1000):x}"
        self._seq = 0
        self._file_seq = 0
        self._pending: list[tuple[str, bytes, int, int, int]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cleanup = 0.0
        b = self.bcfg
        self.limiter = DeadLetterLimiter(b.dead_letters_per_min, b.dead_letters_total_per_min, b.dead_summary_s,
                                         clock=clock)
        self._progress = JobProgress(cfg.store_url, cfg.checkpoint_dir) if consumed_before is None else None
        self.quota = SpoolQuota(self.spool, b.spool_max_bytes, consumed_before or self._progress, suffix=SPOOL_SUFFIX)  # type: ignore[arg-type]
        self.client = self._make_client()

    def _make_client(self) -> object:
        mqtt = self.mqtt
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415 - after require()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.bcfg.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if self.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(0.2, 5)
        return client

    # -- MQTT callbacks (paho's network thread) ---------------------------------------------
    def _on_connect(self, client: object, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("bridge: connect refused: %s", reason)
            return
        self.stats.connects += 1
        client.subscribe([(subscription(k, prefix=self.bcfg.topic_prefix), 1)  # type: ignore[attr-defined]
                          for k in BRIDGED_KINDS])
        log.info("bridge: connected to %s:%d (session present: %s)", self.host, self.port,
                 getattr(flags, "session_present", "?"))

    def _on_subscribe(self, client: object, userdata: object, mid: object, reasons: object, props: object) -> None:
        # Ready only once the broker has the subscription: on a new session, messages
        # published between CONNACK and SUBACK would otherwise never reach us.
        self._connected.set()

    def _on_disconnect(self, client: object, userdata: object, flags: object, reason: object, props: object) -> None:
        self._connected.clear()
        log.warning("bridge: disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        now_ms = int(self.clock() * 1000)
        with self._cond:
            self._pending.append((msg.topic, bytes(msg.payload), now_ms, msg.mid, msg.qos))  # type: ignore[attr-defined]
            self.stats.received += 1
            if len(self._pending) >= self.bcfg.max_batch:
                self._cond.notify()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect (persistent session) and start the network and writer threads."""
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 24 * 3600  # the broker keeps our queue for a week
        props.ReceiveMaximum = 65535  # unacked messages in flight to us while a batch is written
        try:
            self.client.connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)  # type: ignore[attr-defined]
        except OSError as exc:
            raise CloudRetryableError("cloud.bridge", f"broker {self.cfg.broker_url} unreachable: {exc}",
                                      "start the broker or fix broker_url") from exc
        self.client.loop_start()  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._writer, name="edgevib-bridge-writer", daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            self.stop()
            raise CloudRetryableError("cloud.bridge", f"no CONNACK/SUBACK from {self.cfg.broker_url} in {timeout} s",
                                      "check the broker")

    def stop(self) -> None:
        """Write what is pending, then disconnect (the session stays at the broker)."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.client.disconnect()  # type: ignore[attr-defined]
        self.client.loop_stop()  # type: ignore[attr-defined]
        if self._progress is not None:
            self._progress.close()

    def __enter__(self) -> Bridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- writer thread ------------------------------------------------------------------------
    def _writer(self) -> None:
        flush_s = self.bcfg.flush_ms / 1000
        while True:
            with self._cond:
                if not self._pending and not self._stop.is_set():
                    self._cond.wait(flush_s)
                if self._pending and len(self._pending) < self.bcfg.max_batch and not self._stop.is_set():
                    # Let a batch fill for up to flush_ms after its first message.
                    self._cond.wait(max(0.0, flush_s - (self.clock() - self._pending[0][2] / 1000)))
                batch, self._pending = self._pending, []
            if batch or self.limiter.due_soon(force=self._stop.is_set()):
                try:
                    self._write(batch, final=self._stop.is_set())
                except OSError as exc:
                    # Nothing acked: the broker redelivers these after a reconnect.
                    log.error("bridge: cannot write spool batch (%s); dropping connection so the broker redelivers", exc)
                    self.client.disconnect()  # type: ignore[attr-defined]
                    self.client.reconnect()  # type: ignore[attr-defined]
                    continue
                for _, _, _, mid, qos in batch:
                    if qos > 0:
                        self.client.ack(mid, qos)  # type: ignore[attr-defined]
            if self.clock() - self._last_cleanup > 5:
                self._cleanup()
            if self._stop.is_set() and not batch:
                return

    def _write(self, batch: list[tuple[str, bytes, int, int, int]], *, final: bool = False) -> None:
        lines: list[bytes] = []
        dead_lines: list[bytes] = []
        for topic, payload, recv_ms, _, _ in batch:
            self._seq += 1
            rec = normalize(topic, payload, recv_ms, f"{self._run}-{self._seq}", self.bcfg.topic_prefix)
            if rec["kind"] != "dead":
                lines.append(dumps_line(rec))
            elif self.limiter.allow(f"{rec['site']}/{rec['gateway']}", recv_ms / 1000):
                dead_lines.append(dumps_line(rec))
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
        if dead_lines and not self.quota.make_room(need + sum(map(len, dead_lines)), DEAD_SHARE):
            self.stats.dead_over_quota += len(dead_lines)
            log.warning("bridge: spool over bridge.spool_max_bytes=%d: %d dead letters dropped",
                        self.bcfg.spool_max_bytes, len(dead_lines))
            dead_lines = []
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
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self.clock()))}-{self._run}-{self._file_seq:08d}{SPOOL_SUFFIX}"
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


def run_bridge(cfg: CloudConfig, stop: threading.Event) -> BridgeStats:
    """Run until ``stop`` is set (the CLI sets it on Ctrl-C)."""
    bridge = Bridge(cfg)
    bridge.start()
    try:
        while not stop.wait(10):
            s = bridge.stats
            log.info("bridge: received %d written %d dead %d (suppressed %d, over quota %d) files %d, spool %d bytes",
                     s.received, s.written, s.dead, s.dead_suppressed, s.dead_over_quota, s.files, bridge.quota.used)
    finally:
        bridge.stop()
    return bridge.stats
