"""Store retention (issue 19): fill a store with a simulated month of indicators, run
``edgevib cloud maintain`` (cloud/retention.py), and time the dashboard's trend query.

    .venv/bin/python benchmarks/store_retention.py                      # 100 sensors, SQLite in a temp dir
    .venv/bin/python benchmarks/store_retention.py --sensors 1000 --step-s 600
    .venv/bin/python benchmarks/store_retention.py --store postgresql://127.0.0.1:5432/test

The issue's month from 1,000 sensors at 10 s is 259M raw rows; this fills one row per sensor
per ``--step-s`` (600 s by default) and, like the job, one 1-h rollup per sensor-hour
(``--minute-rollups-days`` adds 1-min rollups for the newest days). Prints fill time, maintain
time, size before/after, and the trend query's latency (``alert_view.sensor_trends``, what
``/api/trends`` calls) p50/p99 for a 24 h, 7 d and 30 d range, before and after maintain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ZONES = np.array(["A", "B", "C", "D"])


def sensor_key(k: int) -> tuple[str, str, str]:
    """(site, gateway, sensor) of simulated sensor ``k``: 10 sensors per gateway, 10 gateways per site."""
    return f"site{k // 100}", f"gw{k // 10}", f"de{k % 10}"


def fill(store: Any, *, sensors: int, days: int, step_s: int, now_ms: int, seed: int = 0,
         minute_rollups_days: float = 0.0, batch: int = 20_000) -> dict[str, int]:
    """Raw indicators (one row per sensor per ``step_s`` over ``days`` up to ``now_ms``) and the
    job's 1-h rollups of them, written with ``Store.apply_many`` in batches; numpy for the values.

    Returns row counts: ``indicators``, ``rollups_1h``, ``rollups_1m``.
    """
    rng = np.random.default_rng(seed)
    per_hour = 3600 // step_s
    hours = days * 24
    start = now_ms - now_ms % HOUR_MS - hours * HOUR_MS
    t = start + np.arange(hours * per_hour, dtype=np.int64) * step_s * 1000  # per sensor
    n_raw = n_hour = n_min = 0
    for k in range(sensors):
        site, gw, sensor = sensor_key(k)
        asset = f"{site}/{gw}/{sensor}"
        base = 0.5 + 3.0 * rng.random()
        vel = np.abs(base + 0.002 * np.arange(t.size) / per_hour * rng.random() + 0.3 * rng.standard_normal(t.size))
        acc = vel * 0.05 + 0.01 * rng.random(t.size)
        kurt = 3.0 + np.abs(rng.standard_normal(t.size))
        zone = ZONES[np.clip(np.searchsorted([1.4, 2.8, 4.5], vel), 0, 3)]
        rows: list[dict[str, Any]] = []
        for i in range(t.size):
            ti = int(t[i])
            rows.append({"id": hashlib.sha256(f"{asset}/{ti}".encode()).hexdigest()[:24], "site": site, "gateway": gw,
                         "sensor": sensor, "asset": asset, "t_ms": ti, "recv_ms": ti + 40,
                         "acc_rms_g": float(acc[i]), "acc_peak_g": float(acc[i] * 3.1), "crest": 3.1,
                         "kurtosis": float(kurt[i]), "vel_rms_mm_s": float(vel[i]), "iso_zone": str(zone[i]),
                         "iso_group": 2, "iso_foundation": "rigid", "env_bpfo_db": -40.0, "env_bpfi_db": -41.0,
                         "env_bsf2_db": -45.0, "env_ftf_db": -50.0, "rpm": 1797.0, "rpm_source": "tacho",
                         "anomaly_ratio": 0.1, "mid": f"m{k}-{i}"})
            if len(rows) >= batch:
                store.apply_many("indicator", rows)
                n_raw += len(rows)
                rows = []
        if rows:
            store.apply_many("indicator", rows)
            n_raw += len(rows)
        shape = (hours, per_hour)
        v, a, ku = vel.reshape(shape), acc.reshape(shape), kurt.reshape(shape)
        zmax = np.searchsorted(ZONES, zone).reshape(shape).max(axis=1)
        roll = [{"site": site, "gateway": gw, "sensor": sensor, "asset": asset, "resolution_s": 3600,
                 "window_start": start + h * HOUR_MS, "window_end": start + (h + 1) * HOUR_MS, "n": per_hour,
                 "vel_min": float(v[h].min()), "vel_mean": float(v[h].mean()), "vel_max": float(v[h].max()),
                 "acc_rms_min": float(a[h].min()), "acc_rms_mean": float(a[h].mean()), "acc_rms_max": float(a[h].max()),
                 "kurtosis_min": float(ku[h].min()), "kurtosis_mean": float(ku[h].mean()),
                 "kurtosis_max": float(ku[h].max()), "worst_zone": str(ZONES[zmax[h]])} for h in range(hours)]
        store.apply_many("indicator_rollup", roll)
        n_hour += len(roll)
        if minute_rollups_days > 0:
            m0 = now_ms - now_ms % 60_000 - int(minute_rollups_days * DAY_MS)
            mins = [{"site": site, "gateway": gw, "sensor": sensor, "asset": asset, "resolution_s": 60,
                     "window_start": m, "window_end": m + 60_000, "n": 1, "vel_mean": base, "worst_zone": "A"}
                    for m in range(m0, now_ms - now_ms % 60_000, 60_000)]
            for j in range(0, len(mins), batch):
                store.apply_many("indicator_rollup", mins[j:j + batch])
            n_min += len(mins)
    return {"indicators": n_raw, "rollups_1h": n_hour, "rollups_1m": n_min}


def trend_latency(store: Any, *, sensors: int, now_ms: int, span_ms: int, n: int = 200, seed: int = 1) -> dict[str, float]:
    """p50/p99/max milliseconds of ``sensor_trends`` over random sensors, range ending now."""
    from edgevib.cloud.web import alert_view

    rng = np.random.default_rng(seed)
    times = []
    points = 0
    for _ in range(n):
        site, gw, sensor = sensor_key(int(rng.integers(sensors)))
        t0 = time.perf_counter()
        out = alert_view.sensor_trends(store, site, gw, sensor, since_ms=now_ms - span_ms, until_ms=now_ms)
        times.append((time.perf_counter() - t0) * 1000)
        points += len(out["series"])
    ms = np.array(times)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "points": points // n, "resolution": out["resolution"]}


def main(argv: list[str] | None = None) -> int:
    from edgevib.cloud.config import RetentionConfig
    from edgevib.cloud.retention import Retention
    from edgevib.cloud.store import Store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensors", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--step-s", type=int, default=600)
    ap.add_argument("--minute-rollups-days", type=float, default=2.0)
    ap.add_argument("--indicators-days", type=float, default=14.0)
    ap.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temp dir)")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{tmp}/store.db"
        store = Store(url)
        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        counts = fill(store, sensors=args.sensors, days=args.days, step_s=args.step_s, now_ms=now_ms,
                      minute_rollups_days=args.minute_rollups_days)
        fill_s = time.perf_counter() - t0
        spans = {"24h": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS}
        before = {k: trend_latency(store, sensors=args.sensors, now_ms=now_ms, span_ms=v, n=args.queries)
                  for k, v in spans.items()}
        ret = Retention(store, RetentionConfig(indicators_days=args.indicators_days), clock=lambda: now_ms / 1000)
        report = ret.run(vacuum=True)
        after = {k: trend_latency(store, sensors=args.sensors, now_ms=now_ms, span_ms=v, n=args.queries)
                 for k, v in spans.items()}
        rows = {t.name: {"deleted": t.deleted, "kept": t.kept} for t in report.tables if t.deleted or t.kept}
        out = {"store": store.kind, "sensors": args.sensors, "days": args.days, "step_s": args.step_s, "filled": counts,
               "fill_s": round(fill_s, 1), "fill_rows_per_s": round(sum(counts.values()) / fill_s),
               "maintain_s": round(report.seconds, 2),
               "maintain_per_table_s": {t.name: round(t.seconds, 2) for t in report.tables if t.seconds > 0.05},
               "size_before_mib": round((report.vacuum["size_before"] or 0) / 2**20, 1),
               "size_after_mib": round((report.vacuum["size_after"] or 0) / 2**20, 1),
               "vacuum": report.vacuum.get("ran"), "rows": rows,
               "trend_before": before, "trend_after": after}
        store.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
