"""The Flink SQL half of the job: spool source, validation routing, windows, health score.

Everything per event runs here, in Flink's JVM (Python operators reach ~1.3k windowed
records/s on these machines; SQL 30-45k). Python sees only what needs timers or writes the
store. All queries are generated from :class:`~edgevib.cloud.config.CloudConfig`.
"""

from __future__ import annotations

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.ingest.records import SEVERITY_WEIGHT, SPOOL_COLUMNS

from edgevib.protocol import SEVERITIES, severity_at_least

# Health of an asset over one window: 100 with no alerts, falling with the weighted count.
HEALTH_SCALE = 10.0


def _interval(seconds: float) -> str:
    # A plain SECOND interval holds at most 99 s: spell it DAY TO SECOND.
    ms = int(round(seconds * 1000))
    d, ms = divmod(ms, 86_400_000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{ms // 1000:02d}.{ms % 1000:03d}' DAY TO SECOND(3)"


def _ms(col: str) -> str:
    # window_start/window_end are TIMESTAMP(3) in UTC (table.local-time-zone = UTC).
    return f"(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', {col}) * CAST(1000 AS BIGINT))"


def _json(kind: str, key: str, fields: dict[str, str]) -> str:
    # Plain column names are quoted: several (raw, state, status) are SQL keywords.
    pairs = ", ".join(f"KEY '{k}' VALUE {f'`{v}`' if v.isidentifier() else v}" for k, v in fields.items())
    return f"SELECT '{kind}' AS kind, CAST({key} AS STRING) AS k, JSON_OBJECT({pairs}) AS body"


def _batch(kind: str, cols: tuple[str, ...], source: str, cfg: CloudConfig,
           extra: dict[str, str] | None = None) -> str:
    """Per-record rows batched into one JSON array per ``batch_ms`` of processing time.

    Python operators pay a fixed cost per record (~1.4k records/s here); one record per
    batch lets the store write thousands of rows in one transaction, and since the batch is
    one record, it is written whole or not at all before a checkpoint.
    """
    fields = {c: c for c in cols} | (extra or {})
    return (f"SELECT '{kind}' AS kind, CAST({_ms('window_end')} AS STRING) AS k, "
            f"CONCAT('[', ARRAY_JOIN(ARRAY_AGG(body), ','), ']') AS body FROM TABLE(TUMBLE("
            f"(SELECT {_json_text(fields)} AS body, proc FROM {source}), "
            f"DESCRIPTOR(proc), {_interval(cfg.job.batch_ms / 1000)})) GROUP BY window_start, window_end")


_SPOOL_TYPES = dict(SPOOL_COLUMNS)


def _json_text(fields: dict[str, str]) -> str:
    """A JSON object per record built by string concatenation (``JSON_QUOTE`` for strings).

    ``JSON_OBJECT`` builds a Jackson tree per record and serialises it: a sixth of the spool
    thread's time in a profile, for every alert. Fields named like a spool column take its
    type; any other expression must be numeric. ``JSON_QUOTE`` escapes quotes, backslashes and
    the usual control characters but leaves rarer ones raw: read the text with
    ``json.loads(text, strict=False)``.

    >>> print(_json_text({"id": "id", "n": "n"}))
    CONCAT('{', '"id":', COALESCE(JSON_QUOTE(`id`), 'null'), ',"n":', COALESCE(CAST(`n` AS STRING), 'null'), '}')
    """
    parts = []
    for i, (k, v) in enumerate(fields.items()):
        typ = _SPOOL_TYPES.get(v) if v.isidentifier() else None
        if typ == "STRING":
            val = f"JSON_QUOTE(`{v}`)"
        elif typ == "BOOLEAN":
            val = f"CASE WHEN `{v}` THEN 'true' WHEN NOT `{v}` THEN 'false' END"
        else:
            val = f"CAST({f'`{v}`' if v.isidentifier() else v} AS STRING)"
        parts += [f"'{',' if i else ''}\"{k}\":'", f"COALESCE({val}, 'null')"]
    return f"CONCAT('{{', {', '.join(parts)}, '}}')"


def _window_batch(kind: str, fields: dict[str, str], source: str, time_col: str, window_s: float) -> str:
    """The rows of one event-time window, as one JSON array per window.

    ``source`` is a windowed result whose rowtime attribute ``time_col`` (its ``window_time``)
    falls in the window it came from, so a TUMBLE of the same size over it collects each
    window's rows in one record: one transaction instead of one per row (a 2 s window of 20
    assets x 9 classes was 180 records through Python, each committed on its own).
    """
    pairs = ", ".join(f"KEY '{k}' VALUE {f'`{v}`' if v.isidentifier() else v}" for k, v in fields.items())
    return (f"SELECT '{kind}' AS kind, CAST({_ms('window_end')} AS STRING) AS k, "
            f"CONCAT('[', ARRAY_JOIN(ARRAY_AGG(body), ','), ']') AS body FROM TABLE(TUMBLE("
            f"(SELECT JSON_OBJECT({pairs}) AS body, {time_col} AS bt FROM {source}), "
            f"DESCRIPTOR(bt), {_interval(window_s)})) GROUP BY window_start, window_end")


def watermark_expr(cfg: CloudConfig) -> str:
    return f"rowtime - {_interval(cfg.job.out_of_orderness_s)}"


def views(cfg: CloudConfig) -> list[str]:
    """Alerts split into on-time and late against the watermark, before any window drops them."""
    j = cfg.job
    serious = ", ".join(f"'{s}'" for s in SEVERITIES if severity_at_least(s, j.min_incident_severity))
    return [
        """CREATE TEMPORARY VIEW alerts_in AS
SELECT *, COALESCE(rowtime <= CURRENT_WATERMARK(rowtime), FALSE) AS late
FROM spool WHERE kind = 'alert'""",
        """CREATE TEMPORARY VIEW raised AS
SELECT id, site, asset, cls, severity, rowtime FROM alerts_in WHERE NOT late AND state = 'raised'""",
        f"""CREATE TEMPORARY VIEW asset_win AS
SELECT asset, site, cls, severity, window_start AS ws, window_end AS we, window_time, COUNT(DISTINCT id) AS n
FROM TABLE(TUMBLE(TABLE raised, DESCRIPTOR(rowtime), {_interval(j.window_s)}))
GROUP BY asset, site, cls, severity, window_start, window_end, window_time""",
        f"""CREATE TEMPORARY VIEW serious AS
SELECT id, site, asset, rowtime FROM raised WHERE severity IN ({serious})""",
    ]


def plain_query(cfg: CloudConfig) -> str:
    """Records the store takes as they are: alerts, dead letters, windowed counts, health."""
    w = cfg.job.window_s
    win = _interval(w)
    # asset_win's window_time renamed: a TUMBLE over it adds a window_time of its own.
    aw = "(SELECT asset, site, cls, severity, n, window_time AS awt FROM asset_win)"
    sev_counts = {f"n_{s}": f"COALESCE(SUM(n) FILTER (WHERE severity = '{s}'), 0)" for s in SEVERITIES}
    weighted = " + ".join(f"{SEVERITY_WEIGHT[s]} * n_{s}" for s in SEVERITIES)
    parts = [
        _batch("alert", ("id", "site", "gateway", "sensor", "asset", "akind", "state", "cls", "severity",
                         "probability", "ev_ms", "recv_ms", "model_name", "model_version", "mid",
                         "verdict", "verdict_confidence", "detail"),
               "alerts_in", cfg, {"late": "CASE WHEN late THEN 1 ELSE 0 END"}),
        _batch("dead", ("mid", "recv_ms", "topic", "site", "gateway", "reason", "detail", "raw"),
               "spool WHERE kind = 'dead'", cfg),
        # Agents' verdicts on model updates; keyed like the pusher's rows (site, gateway, ts_ms),
        # so a verdict both record is one row.
        _json("model_status", "CONCAT(site, '/', gateway)",
              {"site": "site", "gateway": "gateway", "ts_ms": "ev_ms", "name": "model_name",
               "version": "model_version", "sha256": "model_sha256", "result": "status", "reason": "reason"})
        + " FROM spool WHERE kind = 'model_status'",
        # Windowed rows reach Python as one batch per window (see _window_batch).
        _window_batch("asset_counts", {"asset": "asset", "site": "site", "window_start": _ms("ws"),
                                       "window_end": _ms("we"), "cls": "cls", "severity": "severity", "n": "n"},
                      "asset_win", "window_time", w),
        # Site counts and health roll up the per-asset windows (one COUNT DISTINCT state in
        # all): an alert id belongs to exactly one asset, so sums of distinct counts are exact.
        _window_batch("site_counts", {"site": "site", "window_start": _ms("window_start"),
                                      "window_end": _ms("window_end"), "cls": "cls", "severity": "severity", "n": "n"},
                      f"""(SELECT site, cls, severity, window_start, window_end, window_time, SUM(n) AS n
  FROM TABLE(TUMBLE({aw}, DESCRIPTOR(awt), {win}))
  GROUP BY site, cls, severity, window_start, window_end, window_time)""", "window_time", w),
        _window_batch("health", {"asset": "asset", "site": "site", "window_start": _ms("window_start"),
                                 "window_end": _ms("window_end"), "n_alerts": "n_alerts",
                                 **{f"n_{s}": f"n_{s}" for s in SEVERITIES},
                                 "health": f"ROUND(100 * EXP(-({weighted}) / {HEALTH_SCALE}), 2)"},
                      f"""(SELECT asset, site, window_start, window_end, window_time, SUM(n) AS n_alerts,
  {', '.join(f'{v} AS {k}' for k, v in sev_counts.items())}
  FROM TABLE(TUMBLE({aw}, DESCRIPTOR(awt), {win}))
  GROUP BY asset, site, window_start, window_end, window_time)""", "window_time", w),
        # Drift: a gateway whose anomaly detector fires drift_anomalies times in one window.
        # The id names the gateway and the window, so a replay upserts the same trigger.
        _json("retrain_trigger", "id", {"id": "id", "reason": "'drift'", "model_name": "model_name", "site": "site",
                                        "gateway": "gateway", "n_windows": "CAST(0 AS BIGINT)", "ts_ms": "ts_ms",
                                        "detail": "detail"})
        + f""" FROM (SELECT CONCAT('drift:', site, '/', gateway, ':', CAST({_ms('window_end')} AS STRING)) AS id,
  site, gateway, LAST_VALUE(model_name) AS model_name, {_ms('window_end')} AS ts_ms,
  CONCAT('{{"anomalies": ', CAST(COUNT(DISTINCT id) AS STRING), '}}') AS detail
  FROM TABLE(TUMBLE((SELECT * FROM alerts_in WHERE NOT late AND state = 'raised' AND akind = 'anomaly'),
                    DESCRIPTOR(rowtime), {_interval(cfg.job.drift_window_s)}))
  GROUP BY site, gateway, window_start, window_end HAVING COUNT(DISTINCT id) >= {int(cfg.job.drift_anomalies)})""",
        *indicator_parts(cfg),
    ]
    return "\nUNION ALL\n".join(parts)


INDICATOR_COLUMNS: tuple[str, ...] = (
    "id", "site", "gateway", "sensor", "asset", "recv_ms", "acc_rms_g", "acc_peak_g", "crest", "kurtosis",
    "vel_rms_mm_s", "iso_zone", "iso_group", "iso_foundation", "env_bpfo_db", "env_bpfi_db", "env_bsf2_db",
    "env_ftf_db", "rpm", "rpm_source", "anomaly_ratio", "mid")
# Rolled up per sensor and window: (store column prefix, spool column).
ROLLUP_FIGURES: tuple[tuple[str, str], ...] = (("vel", "vel_rms_mm_s"), ("acc_rms", "acc_rms_g"), ("kurtosis", "kurtosis"))


def indicator_parts(cfg: CloudConfig) -> list[str]:
    """Raw indicators (batched like alerts) and one rollup per sensor and event-time window of
    each ``job.indicator_rollups_s``: count, min/mean/max of each ROLLUP_FIGURES, worst ISO zone
    (zones A-D compare as strings). Late indicators are stored raw but miss their windows."""
    src = "(SELECT * FROM spool WHERE kind = 'indicator')"
    parts = [_batch("indicator", INDICATOR_COLUMNS, "spool WHERE kind = 'indicator'", cfg, {"t_ms": "ev_ms"})]
    stats = {f"{p}_{fn.lower()}": f"{fn}({c})" for p, c in ROLLUP_FIGURES for fn in ("MIN", "AVG", "MAX")}
    for res in cfg.job.indicator_rollups_s:
        fields = {"site": "site", "gateway": "gateway", "sensor": "sensor", "asset": "asset",
                  "resolution_s": f"CAST({int(round(res))} AS BIGINT)", "window_start": _ms("window_start"),
                  "window_end": _ms("window_end"), "n": "n", "worst_zone": "worst_zone",
                  **{k.replace("_avg", "_mean"): k for k in stats}}
        parts.append(_window_batch("indicator_rollup", fields, f"""(SELECT site, gateway, sensor,
  LAST_VALUE(asset) AS asset, window_start, window_end, window_time,
  COUNT(*) AS n, MAX(iso_zone) AS worst_zone, {', '.join(f'{e} AS {k}' for k, e in stats.items())}
  FROM TABLE(TUMBLE({src}, DESCRIPTOR(rowtime), {_interval(res)}))
  GROUP BY site, gateway, sensor, window_start, window_end, window_time)""", "window_time", res))
    return parts


def keyed_query(cfg: CloudConfig) -> str:
    """Records the Python fleet operator keeps state for: heartbeats/status per gateway, buckets per asset."""
    gw = "CONCAT(site, '/', gateway)"
    hb_last = ("model_name", "model_version", "model_sha256", "agent_version", "uptime_s", "outbox_pending",
               "drops_total")
    hb_fields = {c: c for c in ("site", "gateway", "ev_ms", "recv_ms", *hb_last)}
    parts = [
        # At most one row per gateway and heartbeat_batch_s reaches Python (keyed state is slow there).
        _json("heartbeat", gw, hb_fields)
        + f""" FROM (SELECT site, gateway, MAX(ev_ms) AS ev_ms, MAX(recv_ms) AS recv_ms,
  {', '.join(f'LAST_VALUE({c}) AS {c}' for c in hb_last)}
  FROM TABLE(TUMBLE((SELECT * FROM spool WHERE kind = 'heartbeat'), DESCRIPTOR(proc),
                    {_interval(cfg.job.heartbeat_batch_s)}))
  GROUP BY site, gateway, window_start, window_end)""",
        _json("status", gw, {"site": "site", "gateway": "gateway", "status": "status", "ev_ms": "ev_ms"})
        + " FROM spool WHERE kind = 'status'",
        _json("bucket", "asset", {"asset": "asset", "site": "site", "window_end": _ms("window_end"), "n": "n"})
        + f""" FROM (SELECT asset, site, window_start, window_end, COUNT(DISTINCT id) AS n
  FROM TABLE(TUMBLE(TABLE serious, DESCRIPTOR(rowtime), {_interval(cfg.job.incident_bucket_s)}))
  GROUP BY asset, site, window_start, window_end)""",
        # Operators' labels, keyed by the model whose evidence they label (retrain triggers).
        _json("label", "CONCAT('model:', COALESCE(model_name, ''))",
              {"id": "id", "site": "site", "gateway": "gateway", "cls": "cls", "n": "n", "ev_ms": "ev_ms",
               "model_name": "model_name"})
        + " FROM spool WHERE kind = 'label'",
    ]
    if cfg.levels.enabled:
        # Level crossings need per-sensor state (cloud/flink/levels.py): one row per indicator
        # reading (every indicators.interval_s per sensor), only the columns the levels compare.
        parts.append(_json("level", "CONCAT('levels:', site, '/', gateway, '/', sensor)",
                           {c: c for c in ("site", "gateway", "sensor", "asset", "ev_ms", "vel_rms_mm_s", "iso_zone",
                                           "iso_group", "iso_foundation")})
                     + " FROM spool WHERE kind = 'indicator'")
    return "\nUNION ALL\n".join(parts)


def fleet_batches_query(cfg: CloudConfig) -> str:
    """The fleet operator's output (view ``fleet_out``: kind, k, body, proc) as one JSON array
    per kind and ``batch_ms``, in arrival order (a later row of a gateway wins the upsert)."""
    return (f"SELECT kind, CAST({_ms('window_end')} AS STRING) AS k, "
            f"CONCAT('[', ARRAY_JOIN(ARRAY_AGG(body), ','), ']') AS body "
            f"FROM TABLE(TUMBLE(TABLE fleet_out, DESCRIPTOR(proc), {_interval(cfg.job.batch_ms / 1000)})) "
            f"GROUP BY kind, window_start, window_end")
