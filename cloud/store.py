"""The alert store the job writes and the dashboard / CLI read: SQLite or PostgreSQL.

Every write is an idempotent upsert keyed on a natural key (alert id, window start,
incident id, event id, bridge message id), so a replay after a restart from a checkpoint
rewrites the same rows instead of adding new ones: exactly-once effect on top of Flink's
at-least-once delivery to this sink.

>>> s = Store("sqlite:///:memory:")
>>> s.apply("dead", {"mid": "m1", "recv_ms": 1, "topic": "t", "site": "", "gateway": "",
...                  "reason": "bad_json", "detail": "x", "raw": "{"})
>>> s.apply("dead", {"mid": "m1", "recv_ms": 1, "topic": "t", "site": "", "gateway": "",
...                  "reason": "bad_json", "detail": "x", "raw": "{"})
>>> s.dead_letter_counts()
{'bad_json': 1}
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from edgevib.cloud.errors import CloudError, CloudRetryableError

log = logging.getLogger(__name__)

# (table, columns, primary key). Column types are portable between SQLite and PostgreSQL.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alerts": (("id TEXT", "site TEXT", "gateway TEXT", "sensor TEXT", "asset TEXT", "akind TEXT",
                "state TEXT", "cls TEXT", "severity TEXT", "probability DOUBLE PRECISION", "ev_ms BIGINT",
                "recv_ms BIGINT", "stored_ms BIGINT", "late INTEGER", "model_name TEXT",
                "model_version TEXT", "mid TEXT", "verdict TEXT", "verdict_confidence DOUBLE PRECISION",
                "detail TEXT"), ("id",)),
    "asset_counts": (("asset TEXT", "site TEXT", "window_start BIGINT", "window_end BIGINT", "cls TEXT",
                      "severity TEXT", "n BIGINT"), ("asset", "window_start", "cls", "severity")),
    "site_counts": (("site TEXT", "window_start BIGINT", "window_end BIGINT", "cls TEXT", "severity TEXT",
                     "n BIGINT"), ("site", "window_start", "cls", "severity")),
    "asset_health": (("asset TEXT", "site TEXT", "window_start BIGINT", "window_end BIGINT", "n_alerts BIGINT",
                      "n_info BIGINT", "n_warning BIGINT", "n_critical BIGINT", "health DOUBLE PRECISION"),
                     ("asset", "window_start")),
    "incidents": (("id TEXT", "asset TEXT", "site TEXT", "status TEXT", "opened_ms BIGINT",
                   "last_alert_ms BIGINT", "n_alerts BIGINT", "resolved_ms BIGINT"), ("id",)),
    "gateways": (("site TEXT", "gateway TEXT", "status TEXT", "last_seen_ms BIGINT", "last_hb_ms BIGINT",
                  "model_name TEXT", "model_version TEXT", "model_sha256 TEXT", "agent_version TEXT",
                  "uptime_s DOUBLE PRECISION", "outbox_pending BIGINT", "drops_total BIGINT",
                  "reported_status TEXT"), ("site", "gateway")),
    "fleet_events": (("id TEXT", "type TEXT", "site TEXT", "gateway TEXT", "asset TEXT", "ts_ms BIGINT",
                      "body TEXT"), ("id",)),
    # -- the closed loop (docs/closed_loop.md) --
    # Raw windows uploaded by agents; the window itself is a file under the dataset directory.
    "evidence": (("id TEXT", "site TEXT", "gateway TEXT", "sensor TEXT", "t_ms BIGINT", "rpm DOUBLE PRECISION",
                  "sample_rate BIGINT", "reason TEXT", "alert_id TEXT", "pred_cls TEXT",
                  "probability DOUBLE PRECISION", "model_name TEXT", "model_version TEXT", "model_sha256 TEXT",
                  "label TEXT", "labelled_ms BIGINT", "path TEXT", "nbytes BIGINT", "stored_ms BIGINT",
                  # the sensor's bearing, when the record carries it (order features need it and rpm)
                  "n_balls BIGINT", "ball_diameter DOUBLE PRECISION", "pitch_diameter DOUBLE PRECISION",
                  "contact_angle_deg DOUBLE PRECISION"), ("id",)),
    # Operators' labels of alerts (the class they confirmed or corrected).
    "labels": (("alert_id TEXT", "site TEXT", "gateway TEXT", "cls TEXT", "labelled_by TEXT", "labelled_ms BIGINT",
                "n_windows BIGINT"), ("alert_id",)),
    # Written by the Flink job (replays rewrite the same ids) ...
    "retrain_triggers": (("id TEXT", "reason TEXT", "model_name TEXT", "site TEXT", "gateway TEXT",
                          "n_windows BIGINT", "ts_ms BIGINT", "detail TEXT"), ("id",)),
    # ... and worked off by the retrain worker, which owns this table.
    "retrain_runs": (("trigger_id TEXT", "status TEXT", "started_ms BIGINT", "finished_ms BIGINT",
                      "decision TEXT", "model_name TEXT", "model_version TEXT", "metrics TEXT", "detail TEXT"),
                     ("trigger_id",)),
    # Staged model rollouts (edgevib models push) and each gateway's verdict.
    "rollouts": (("id TEXT", "name TEXT", "version TEXT", "sha256 TEXT", "target TEXT", "canary_pct DOUBLE PRECISION",
                  "status TEXT", "started_ms BIGINT", "finished_ms BIGINT", "detail TEXT"), ("id",)),
    "model_status": (("site TEXT", "gateway TEXT", "ts_ms BIGINT", "name TEXT", "version TEXT", "sha256 TEXT",
                      "result TEXT", "reason TEXT"), ("site", "gateway", "ts_ms")),
    # Operators' acknowledgements of alerts (dashboard / `edgevib alerts ack`); one per alert.
    "alert_acks": (("alert_id TEXT", "acked_by TEXT", "acked_ms BIGINT", "note TEXT"), ("alert_id",)),
    # Operators' free-text notes on an alert (dashboard alert page); many per alert, shown in its history.
    "alert_notes": (("id TEXT", "alert_id TEXT", "noted_by TEXT", "noted_ms BIGINT", "note TEXT"), ("id",)),
    # Condition indicators (edgevib.indicators/1), one row per sensor and interval ...
    "indicators": (("id TEXT", "site TEXT", "gateway TEXT", "sensor TEXT", "asset TEXT", "t_ms BIGINT", "recv_ms BIGINT",
                    "acc_rms_g DOUBLE PRECISION", "acc_peak_g DOUBLE PRECISION", "crest DOUBLE PRECISION",
                    "kurtosis DOUBLE PRECISION", "vel_rms_mm_s DOUBLE PRECISION", "iso_zone TEXT", "iso_group INTEGER",
                    "iso_foundation TEXT", "env_bpfo_db DOUBLE PRECISION", "env_bpfi_db DOUBLE PRECISION",
                    "env_bsf2_db DOUBLE PRECISION", "env_ftf_db DOUBLE PRECISION", "rpm DOUBLE PRECISION",
                    "rpm_source TEXT", "anomaly_ratio DOUBLE PRECISION", "mid TEXT"), ("id",)),
    # ... and rolled up by the job per sensor over each job.indicator_rollups_s (event time).
    "indicator_rollups": (("site TEXT", "gateway TEXT", "sensor TEXT", "asset TEXT", "resolution_s BIGINT",
                           "window_start BIGINT", "window_end BIGINT", "n BIGINT",
                           *(f"{p}_{s} DOUBLE PRECISION" for p in ("vel", "acc_rms", "kurtosis")
                             for s in ("min", "mean", "max")), "worst_zone TEXT"),
                          ("site", "gateway", "sensor", "resolution_s", "window_start")),
    # Level crossings of velocity RMS per sensor (cloud/flink/levels.py): raised/cleared/baseline.
    "level_events": (("id TEXT", "site TEXT", "gateway TEXT", "sensor TEXT", "asset TEXT", "ts_ms BIGINT", "kind TEXT",
                      "level TEXT", "previous TEXT", "value DOUBLE PRECISION", "threshold DOUBLE PRECISION",
                      "mode TEXT", "figure TEXT", "detail TEXT"), ("id",)),
    "dead_letters": (("mid TEXT", "recv_ms BIGINT", "topic TEXT", "site TEXT", "gateway TEXT", "reason TEXT",
                      "detail TEXT", "raw TEXT", "stored_ms BIGINT"), ("mid",)),
}

# Severity names before the protocol had one vocabulary (edgevib.protocol.SEVERITIES).
_OLD_SEVERITY = {"low": "info", "medium": "warning", "high": "critical"}

# Tables that gained columns after stores were written (checked at open, added when missing).
_ADDED_COLUMNS = ("alerts", "evidence")

# (name, table, columns): what retention's batched age deletes and the trend page's alert list read.
_INDEXES = (
    ("indicators_t", "indicators", "t_ms"),
    ("indicator_rollups_age", "indicator_rollups", "resolution_s, window_start"),
    ("dead_letters_recv", "dead_letters", "recv_ms"),
    ("fleet_events_ts", "fleet_events", "ts_ms"),
    ("asset_counts_ws", "asset_counts", "window_start"),
    ("site_counts_ws", "site_counts", "window_start"),
    ("asset_health_ws", "asset_health", "window_start"),
    ("model_status_ts", "model_status", "ts_ms"),
    ("evidence_t", "evidence", "t_ms"),
    ("alerts_ev", "alerts", "ev_ms"),
    ("alerts_sensor", "alerts", "site, gateway, sensor, ev_ms"),
    ("alert_notes_alert", "alert_notes", "alert_id"),
    ("level_events_ts", "level_events", "ts_ms"),
    ("level_events_asset", "level_events", "asset, ts_ms"),
)

# Columns a replay must not overwrite: the first store time is what latency is measured on.
_KEEP_FIRST = {"stored_ms"}


def _col_names(table: str) -> list[str]:
    return [c.split()[0] for c in TABLES[table][0]]


class Store:
    """One connection; ``apply(kind, row)`` upserts and commits (SQLite WAL, or PostgreSQL)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, timeout_s: float = 30.0) -> None:
        self.url = url
        self.clock = clock
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):]
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                # Flink calls open() and the record functions from different threads, one at a time.
                self.conn: Any = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL: a commit survives a process crash (not a power cut) without an fsync each.
                self.conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise CloudError("cloud.store", f"cannot open {url!r}: {exc}", "use a writable sqlite:///PATH") from exc
            self.kind = "sqlite"
            self.ph = "?"
        elif url.startswith(("postgresql://", "postgres://")):
            from edgevib.extras import require  # noqa: PLC0415

            psycopg = require("psycopg", extra="cloud", feature="PostgreSQL alert store")
            try:
                self.conn = psycopg.connect(url, autocommit=True, connect_timeout=int(timeout_s))
            except psycopg.OperationalError as exc:
                raise CloudRetryableError("cloud.store", f"cannot connect to {url!r}: {exc}",
                                          "start PostgreSQL or fix store_url") from exc
            self.kind = "postgresql"
            self.ph = "%s"
        else:
            raise CloudError("cloud.store", f"url {url!r}", "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        self._sql: dict[str, str] = {}
        self.init_schema()

    def init_schema(self) -> None:
        for table, (cols, pk) in TABLES.items():
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)}, PRIMARY KEY ({', '.join(pk)}))")
        self._add_new_columns()
        self.conn.execute("CREATE INDEX IF NOT EXISTS alerts_asset ON alerts (asset, ev_ms)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS indicators_sensor ON indicators (site, gateway, sensor, t_ms)")
        # Age deletes of cloud/retention.py (one time column per table) and the dashboard's
        # per-sensor alert list (trends); rollups' trend reads use their primary key.
        for name, on, columns in _INDEXES:
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on} ({columns})")
        self._migrate_severities()

    def _columns(self, table: str) -> set[str]:
        if self.kind == "sqlite":
            return {r[1] for r in self.query(f"PRAGMA table_info({table})")}
        return {r[0] for r in self.query("SELECT column_name FROM information_schema.columns WHERE "
                                         "table_name = ? AND table_schema = current_schema()", (table,))}

    def _add_new_columns(self) -> None:
        """A store written before a column was added to a table (alerts' verdict): add it, empty (NULL)."""
        for table in _ADDED_COLUMNS:
            have = self._columns(table)
            for col in TABLES[table][0]:
                if col.split()[0] not in have:
                    log.warning("store %s: adding column %s.%s (an older store)", self.url, table, col.split()[0])
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {col}")

    def _migrate_severities(self) -> None:
        """A store written before the one severity vocabulary: rename low/medium/high in place, once.

        Detected by ``asset_health.n_low`` (the renamed columns mark it done, so rows written
        in the new names never meet renamed ones); one transaction, so a crash redoes it whole.
        """
        if self.kind == "sqlite":
            cols = {r[1] for r in self.query("PRAGMA table_info(asset_health)")}
        else:
            cols = {r[0] for r in self.query("SELECT column_name FROM information_schema.columns WHERE "
                                             "table_name = 'asset_health' AND table_schema = current_schema()")}
        if "n_low" not in cols:
            return
        log.warning("store %s: renaming severities low/medium/high to info/warning/critical (an older store)", self.url)

        def migrate() -> None:
            for old, new in _OLD_SEVERITY.items():
                self.conn.execute(f"ALTER TABLE asset_health RENAME COLUMN n_{old} TO n_{new}")
                for table in ("alerts", "asset_counts", "site_counts"):
                    self.conn.execute(f"UPDATE {table} SET severity = {self.ph} WHERE severity = {self.ph}", (new, old))

        self._atomic(migrate)

    def _atomic(self, work: Callable[[], None]) -> None:
        """Run ``work`` in one transaction: all of it is stored or none (a crash redoes it whole)."""
        if self.kind == "sqlite":
            # IMMEDIATE: take the write lock up front, so a second writer waits instead of failing mid-way
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                work()
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                work()

    def _upsert_sql(self, table: str) -> str:
        sql = self._sql.get(table)
        if sql is None:
            names = _col_names(table)
            pk = TABLES[table][1]
            updates = [f"{c} = excluded.{c}" for c in names if c not in pk and c not in _KEEP_FIRST]
            sql = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([self.ph] * len(names))}) "
                   f"ON CONFLICT ({', '.join(pk)}) DO " + ("UPDATE SET " + ", ".join(updates) if updates else "NOTHING"))
            self._sql[table] = sql
        return sql

    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        names = _col_names(table)
        values = [tuple(r.get(c) for c in names) for r in rows]
        if not values:
            return
        sql = self._upsert_sql(table)
        try:
            if self.kind == "sqlite":
                self.conn.executemany(sql, values)
            else:
                with self.conn.cursor() as cur:
                    cur.executemany(sql, values)
        except (sqlite3.Error, Exception) as exc:
            if self.kind == "sqlite" and isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise CloudRetryableError("cloud.store", f"{table}: {exc}", "retry; another writer holds the lock") from exc
            raise

    def apply(self, kind: str, row: dict[str, Any]) -> None:
        """Store one record of the job's output (``kind`` names the table, see :data:`KIND_TABLE`)."""
        table = KIND_TABLE.get(kind)
        if table is None:
            raise CloudError("cloud.store", f"record kind {kind!r}", f"use one of {', '.join(sorted(KIND_TABLE))}")
        if table in ("alerts", "dead_letters"):
            row = {**row, "stored_ms": int(self.clock() * 1000)}
        self.upsert(table, [row])

    def apply_many(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Store a batch of one kind in one transaction (all or nothing)."""
        table = KIND_TABLE.get(kind)
        if table is None:
            raise CloudError("cloud.store", f"record kind {kind!r}", f"use one of {', '.join(sorted(KIND_TABLE))}")
        if table in ("alerts", "dead_letters"):
            now = int(self.clock() * 1000)
            rows = [{**r, "stored_ms": now} for r in rows]
        self._atomic(lambda: self.upsert(table, rows))

    # -- readers for the CLI, dashboard and tests --------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind != "sqlite":
            sql = sql.replace("?", "%s")
        cur = self.conn.execute(sql, tuple(params))
        return [tuple(r) for r in cur.fetchall()]

    def dead_letter_counts(self) -> dict[str, int]:
        return {r: int(n) for r, n in self.query("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason")}

    def asset_counts(self, max_window_end: int | None = None) -> dict[tuple[str, int, str, str], int]:
        """(asset, window_start, cls, severity) -> distinct alerts, for windows that ended."""
        sql = "SELECT asset, window_start, cls, severity, n FROM asset_counts"
        rows = self.query(sql + " WHERE window_end <= ?", (max_window_end,)) if max_window_end else self.query(sql)
        return {(a, int(w), c, s): int(n) for a, w, c, s, n in rows}

    def site_counts(self) -> dict[tuple[str, int, str, str], int]:
        return {(a, int(w), c, s): int(n) for a, w, c, s, n in
                self.query("SELECT site, window_start, cls, severity, n FROM site_counts")}

    def gateways(self) -> dict[str, dict[str, Any]]:
        names = _col_names("gateways")
        return {f"{r[0]}/{r[1]}": dict(zip(names, r, strict=True)) for r in self.query(f"SELECT {', '.join(names)} FROM gateways")}

    def incidents(self) -> list[dict[str, Any]]:
        names = _col_names("incidents")
        return [dict(zip(names, r, strict=True)) for r in self.query(f"SELECT {', '.join(names)} FROM incidents ORDER BY opened_ms")]

    def fleet_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        names = _col_names("fleet_events")
        sql = f"SELECT {', '.join(names)} FROM fleet_events"
        rows = self.query(sql + " WHERE type = ? ORDER BY ts_ms", (type_,)) if type_ else self.query(sql + " ORDER BY ts_ms")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def indicator_rollups(self, resolution_s: int | None = None) -> list[dict[str, Any]]:
        """Rollup rows (oldest window first), of one resolution or all."""
        names = _col_names("indicator_rollups")
        sql = f"SELECT {', '.join(names)} FROM indicator_rollups"
        order = " ORDER BY site, gateway, sensor, resolution_s, window_start"
        rows = (self.query(sql + " WHERE resolution_s = ?" + order, (resolution_s,)) if resolution_s is not None
                else self.query(sql + order))
        return [dict(zip(names, r, strict=True)) for r in rows]

    def summary(self) -> dict[str, int]:
        """Row counts per table plus late alerts: the CLI's ``edgevib cloud status``."""
        out = {t: int(self.query(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}
        out["late_alerts"] = int(self.query("SELECT COUNT(*) FROM alerts WHERE late = 1")[0][0])
        return out

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection is not worth an error
            log.debug("store: close failed", exc_info=True)


KIND_TABLE = {
    "alert": "alerts", "asset_counts": "asset_counts", "site_counts": "site_counts",
    "health": "asset_health", "incident": "incidents", "gateway": "gateways",
    "fleet_event": "fleet_events", "dead": "dead_letters",
    "evidence": "evidence", "label": "labels", "retrain_trigger": "retrain_triggers", "retrain_run": "retrain_runs",
    "rollout": "rollouts", "model_status": "model_status", "alert_ack": "alert_acks", "alert_note": "alert_notes",
    "indicator": "indicators", "indicator_rollup": "indicator_rollups",
    "level_event": "level_events",
}
