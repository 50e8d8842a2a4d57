"""Retention and downsampling of the store (``[retention]``, ``edgevib cloud maintain``; issue 19).

What goes when (days of ``RetentionConfig``; 0 keeps forever), each by one time column:

==================  ==============================  ===================================  =========
table               time column                     rule                                 default
==================  ==============================  ===================================  =========
indicators          ``t_ms`` (signal time)          raw rows, in whole hours; an hour    14 days
                                                    with no 1-h rollup gets one computed
                                                    from its raw rows first
indicator_rollups   ``window_start``                ``resolution_s`` < 3600              31 days
indicator_rollups   ``window_start``                ``resolution_s`` >= 3600             400 days
dead_letters        ``recv_ms``                                                          7 days
fleet_events        ``ts_ms``                                                            90 days
asset_counts,       ``window_start``                windowed alert counts                400 days
site_counts,
asset_health
model_status        ``ts_ms``                                                            180 days
retrain_triggers    ``ts_ms``                                                            365 days
retrain_runs,       ``finished_ms``                 finished ones only                   365 days
rollouts
evidence            ``t_ms``                        unlabelled rows and their files      forever
alerts              ``ev_ms``                       with their ``alert_acks`` and        forever
                                                    ``alert_notes``
incidents           ``resolved_ms``                 resolved ones (``alerts_days``)      forever
labels              ``labelled_ms``                                                      forever
level_events        ``ts_ms``                       warning/alarm crossings              forever
gateways            (none)                          one row per gateway, never aged      forever
==================  ==============================  ===================================  =========

Evidence windows are bounded by the dataset quota (``evidence.max_bytes``, cloud/learning/dataset.py,
which evicts unlabelled windows oldest first); ``evidence_days`` is off by default so the two
do not both manage the same rows, and when set it deletes by age with the quota's rule
(unlabelled only, file and row).

Deletes run in batches of ``batch_rows`` (one statement, one short transaction each), so the
job's writes wait at most one batch. SQLite: the file does not shrink by itself (a store is
created with ``auto_vacuum = NONE``); :meth:`Retention.run` with ``vacuum=True`` runs
``VACUUM`` (``PRAGMA incremental_vacuum`` when the file is in incremental mode) and truncates
the WAL; ``vacuum=None`` does that only when ``vacuum`` is configured and over a quarter of
the file is free pages. PostgreSQL: plain ``DELETE``; autovacuum makes the space reusable
(``vacuum=True`` runs ``VACUUM (ANALYZE)`` on the tables that lost rows, never ``FULL``).

>>> from edgevib.cloud.config import RetentionConfig
>>> from edgevib.cloud.store import Store
>>> s = Store("sqlite:///:memory:")
>>> day = 86_400_000
>>> s.apply_many("dead", [{"mid": f"m{i}", "recv_ms": i * day} for i in range(10)])
>>> r = Retention(s, RetentionConfig(dead_letters_days=7), clock=lambda: 10 * day / 1000).run()
>>> [(t.table, t.deleted, t.kept) for t in r.tables if t.table == "dead_letters"]
[('dead_letters', 3, 7)]
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevib.cloud.config import RetentionConfig
from edgevib.cloud.store import TABLES, Store

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
HOURLY = 3600  # resolution_s of the rollups that outlive the raw rows (what the dashboard shows beyond 7 days)


@dataclass(frozen=True)
class Rule:
    """Delete rows of ``table`` whose ``column`` is before now - ``days`` (and ``where`` holds)."""

    table: str
    column: str
    days_key: str  # the RetentionConfig field
    where: str = ""  # an extra condition, e.g. "resolution_s < 3600"
    label: str = ""  # how the report names it (a table with two rules)

    @property
    def name(self) -> str:
        return self.label or self.table


RULES: tuple[Rule, ...] = (
    Rule("indicators", "t_ms", "indicators_days"),
    Rule("indicator_rollups", "window_start", "fine_rollups_days", f"resolution_s < {HOURLY}", "indicator_rollups<1h"),
    Rule("indicator_rollups", "window_start", "rollups_days", f"resolution_s >= {HOURLY}", "indicator_rollups>=1h"),
    Rule("dead_letters", "recv_ms", "dead_letters_days"),
    Rule("fleet_events", "ts_ms", "fleet_events_days"),
    Rule("asset_counts", "window_start", "counts_days"),
    Rule("site_counts", "window_start", "counts_days"),
    Rule("asset_health", "window_start", "counts_days"),
    Rule("model_status", "ts_ms", "model_status_days"),
    Rule("retrain_triggers", "ts_ms", "retrain_days"),
    Rule("retrain_runs", "finished_ms", "retrain_days"),
    Rule("rollouts", "finished_ms", "retrain_days"),
    Rule("evidence", "t_ms", "evidence_days", "label IS NULL"),
    Rule("alerts", "ev_ms", "alerts_days"),  # + alert_acks, alert_notes of the deleted alerts
    Rule("incidents", "resolved_ms", "alerts_days", "status = 'resolved'"),
    Rule("labels", "labelled_ms", "labels_days"),
    Rule("level_events", "ts_ms", "level_events_days"),
)
# Tables no rule ages: they follow another table (acks, notes: their alert) or hold one row per thing.
FOLLOWERS = {"alert_acks": "alerts", "alert_notes": "alerts"}
NEVER = ("gateways",)


@dataclass
class TableResult:
    name: str  # table, or table<rule> for a table with two rules
    days: float  # 0: kept forever
    cutoff_ms: int | None  # rows before it were deleted (None: nothing aged)
    deleted: int = 0
    kept: int = 0
    batches: int = 0
    seconds: float = 0.0
    rolled_up: int = 0  # indicators: hourly rollups computed from raw rows before they went
    files_deleted: int = 0  # evidence: window files

    @property
    def table(self) -> str:
        return self.name.split("<")[0].split(">")[0]


@dataclass
class Report:
    store: str
    kind: str
    now_ms: int
    tables: list[TableResult] = field(default_factory=list)
    vacuum: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "kind": self.kind, "now_ms": self.now_ms, "seconds": round(self.seconds, 3),
                "deleted": self.deleted, "tables": [asdict(t) for t in self.tables], "vacuum": self.vacuum}


class Retention:
    """Apply a :class:`RetentionConfig` to one :class:`Store` (see the module doc)."""

    def __init__(self, store: Store, cfg: RetentionConfig, *, evidence_dir: Path | str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.cfg, self.clock = store, cfg, clock
        self.evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
        self.batch = int(cfg.batch_rows)

    # -- helpers ------------------------------------------------------------------------------
    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        if self.store.kind != "sqlite":
            sql = sql.replace("?", "%s")
        return int(self.store.conn.execute(sql, params).rowcount)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        if self.store.kind == "sqlite":
            self.store.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.store.conn.execute("ROLLBACK")
                raise
            self.store.conn.execute("COMMIT")
        else:
            with self.store.conn.transaction():
                yield

    def _count(self, table: str, where: str = "") -> int:
        return int(self.store.query(f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else ""))[0][0])

    def cutoff(self, rule: Rule, now_ms: int) -> int | None:
        days = float(getattr(self.cfg, rule.days_key))
        if days <= 0:
            return None
        cut = now_ms - int(days * DAY_MS)
        # Raw indicators go in whole hours, so an hour is rolled up from all of its rows.
        return cut - cut % HOUR_MS if rule.table == "indicators" else cut

    def _delete_batches(self, rule: Rule, cut: int, res: TableResult) -> None:
        extra = f" AND {rule.where}" if rule.where else ""
        rid = "rowid" if self.store.kind == "sqlite" else "ctid"
        pick = f"SELECT {rid} FROM {rule.table} WHERE {rule.column} < ?{extra} LIMIT {self.batch}"
        sql = (f"DELETE FROM {rule.table} WHERE rowid IN ({pick})" if self.store.kind == "sqlite"
               else f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY({pick}))")
        while True:
            n = self._exec(sql, (cut,))
            res.deleted += n
            res.batches += 1
            if n < self.batch:
                return

    def _delete_alerts(self, cut: int, res: TableResult) -> None:
        """Alerts before ``cut`` with their acks and notes, one batch per transaction."""
        while True:
            ids = [r[0] for r in self.store.query(f"SELECT id FROM alerts WHERE ev_ms < ? LIMIT {self.batch}", (cut,))]
            if not ids:
                return
            marks = ", ".join("?" * len(ids))
            with self._tx():
                for child in FOLLOWERS:
                    self._exec(f"DELETE FROM {child} WHERE alert_id IN ({marks})", tuple(ids))
                res.deleted += self._exec(f"DELETE FROM alerts WHERE id IN ({marks})", tuple(ids))
            res.batches += 1
            if len(ids) < self.batch:
                return

    def _delete_evidence(self, cut: int, res: TableResult) -> None:
        """Unlabelled evidence before ``cut``: rows, then their files (as the dataset quota evicts)."""
        while True:
            rows = self.store.query(f"SELECT id, path FROM evidence WHERE t_ms < ? AND label IS NULL "
                                    f"LIMIT {self.batch}", (cut,))
            if not rows:
                return
            marks = ", ".join("?" * len(rows))
            res.deleted += self._exec(f"DELETE FROM evidence WHERE id IN ({marks})", tuple(r[0] for r in rows))
            res.batches += 1
            if self.evidence_dir is not None:
                for _, path in rows:
                    if path:
                        f = self.evidence_dir / str(path)
                        if f.exists():
                            f.unlink()
                            res.files_deleted += 1
            if len(rows) < self.batch:
                return

    def rollup_missing_hours(self, before_ms: int, since_ms: int | None = None) -> int:
        """Hourly rollups, from the raw rows, of each sensor-hour before ``before_ms`` that has none.

        One statement per day of raw rows (a short lock each); the statistics are the job's
        (cloud/flink/sql.py ``indicator_parts``): ``n``, min/mean/max, worst (highest) ISO zone.
        """
        lo = self.store.query("SELECT MIN(t_ms) FROM indicators WHERE t_ms < ?", (before_ms,))[0][0]
        if lo is None:
            return 0
        start = int(lo) - int(lo) % HOUR_MS
        if since_ms is not None:
            start = max(start, since_ms - since_ms % HOUR_MS)
        stats = ", ".join(f"{agg}({src}) AS {dst}_{s}" for dst, src in
                          (("vel", "vel_rms_mm_s"), ("acc_rms", "acc_rms_g"), ("kurtosis", "kurtosis"))
                          for s, agg in (("min", "MIN"), ("mean", "AVG"), ("max", "MAX")))
        stat_cols = ", ".join(f"{p}_{s}" for p in ("vel", "acc_rms", "kurtosis") for s in ("min", "mean", "max"))
        sql = (f"INSERT INTO indicator_rollups (site, gateway, sensor, asset, resolution_s, window_start, window_end, n, "
               f"{stat_cols}, worst_zone) "
               f"SELECT site, gateway, sensor, asset, {HOURLY}, h, h + {HOUR_MS}, n, {stat_cols}, worst_zone FROM ("
               f"SELECT site, gateway, sensor, MAX(asset) AS asset, (t_ms / {HOUR_MS}) * {HOUR_MS} AS h, COUNT(*) AS n, "
               f"{stats}, MAX(iso_zone) AS worst_zone FROM indicators WHERE t_ms >= ? AND t_ms < ? "
               f"GROUP BY site, gateway, sensor, (t_ms / {HOUR_MS}) * {HOUR_MS}) g "
               f"WHERE NOT EXISTS (SELECT 1 FROM indicator_rollups r WHERE r.site = g.site AND r.gateway = g.gateway "
               f"AND r.sensor = g.sensor AND r.resolution_s = {HOURLY} AND r.window_start = g.h) "
               f"ON CONFLICT DO NOTHING")
        made = 0
        t0 = start
        while t0 < before_ms:
            t1 = min(t0 + DAY_MS, before_ms)
            made += self._exec(sql, (t0, t1))
            t0 = t1
        return made

    # -- size ---------------------------------------------------------------------------------
    def size_bytes(self) -> int | None:
        """SQLite: the file plus its WAL; PostgreSQL: the store's tables with indexes and TOAST."""
        if self.store.kind == "sqlite":
            path = self.store.url[len("sqlite:///"):]
            if path == ":memory:":
                return None
            return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return int(sum(self.store.query(f"SELECT pg_total_relation_size('{t}')")[0][0] for t in TABLES))

    def _vacuum(self, vacuum: bool | None, touched: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"size_before": self.size_bytes()}
        if self.store.kind == "sqlite":
            mode = {0: "none", 1: "full", 2: "incremental"}[int(self.store.query("PRAGMA auto_vacuum")[0][0])]
            pages = int(self.store.query("PRAGMA page_count")[0][0])
            free = int(self.store.query("PRAGMA freelist_count")[0][0])
            run = vacuum if vacuum is not None else (self.cfg.vacuum and free * 4 > pages)
            out.update(auto_vacuum=mode, pages=pages, free_pages=free, ran=None)
            if run and self.store.url != "sqlite:///:memory:":
                if mode == "incremental":
                    self.store.conn.execute("PRAGMA incremental_vacuum")
                    out["ran"] = "incremental_vacuum"
                else:
                    self.store.conn.execute("VACUUM")
                    out["ran"] = "VACUUM"
                self.store.query("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            out.update(ran=None, note="autovacuum reclaims deleted rows")
            if vacuum and touched:
                for t in sorted(touched):
                    self.store.conn.execute(f"VACUUM (ANALYZE) {t}")
                out["ran"] = f"VACUUM (ANALYZE) {', '.join(sorted(touched))}"
        out["size_after"] = self.size_bytes()
        return out

    # -- the run ------------------------------------------------------------------------------
    def run(self, *, vacuum: bool | None = None) -> Report:
        """Apply every rule (batched deletes), then vacuum as asked: see the module doc."""
        t_start = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        report = Report(self.store.url.split("@")[-1], self.store.kind, now_ms)
        touched: set[str] = set()
        for rule in RULES:
            cut = self.cutoff(rule, now_ms)
            res = TableResult(rule.name, float(getattr(self.cfg, rule.days_key)), cut)
            t0 = time.perf_counter()
            if cut is not None:
                if rule.table == "indicators":
                    keep_hourly = self.cutoff(RULES[2], now_ms)  # no rollup that the next rule would delete
                    res.rolled_up = self.rollup_missing_hours(cut, keep_hourly)
                if rule.table == "alerts":
                    self._delete_alerts(cut, res)
                elif rule.table == "evidence":
                    self._delete_evidence(cut, res)
                else:
                    self._delete_batches(rule, cut, res)
            res.kept = self._count(rule.table, rule.where)
            res.seconds = time.perf_counter() - t0
            if res.deleted:
                touched.add(rule.table)
                if rule.table == "alerts":
                    touched.update(FOLLOWERS)
            report.tables.append(res)
            log.info("retention %s: %d deleted, %d kept (cutoff %s)", rule.name, res.deleted, res.kept, cut)
        for table in (*FOLLOWERS, *NEVER):
            report.tables.append(TableResult(table, 0.0, None, kept=self._count(table)))
        report.vacuum = self._vacuum(vacuum, touched)
        report.seconds = time.perf_counter() - t_start
        return report


def format_report(report: Report) -> str:
    """The table ``edgevib cloud maintain`` prints."""
    lines = [f"{'table':<24} {'days':>6} {'deleted':>10} {'kept':>10} {'rolled up':>10}"]
    for t in report.tables:
        days = "keep" if t.days <= 0 else f"{t.days:g}"
        extra = f"{t.rolled_up:>10}" if t.table == "indicators" else ""
        lines.append(f"{t.name:<24} {days:>6} {t.deleted:>10} {t.kept:>10} {extra}".rstrip())
    v = report.vacuum

    def mb(b: int | None) -> str:
        return "n/a" if b is None else f"{b / 2**20:.1f} MiB"

    lines.append(f"deleted {report.deleted} rows in {report.seconds:.1f} s; size {mb(v.get('size_before'))} -> "
                 f"{mb(v.get('size_after'))}; vacuum: {v.get('ran') or 'not run'}"
                 + (f" (auto_vacuum={v['auto_vacuum']}, {v['free_pages']} of {v['pages']} pages free before)"
                    if "auto_vacuum" in v else ""))
    return "\n".join(lines)
