"""Plant overview, asset history and sensor list on a filled store (issue 14): how long the
dashboard's ``/api/plant``, ``/api/history`` and ``/api/sensors`` queries take.

    .venv/bin/python benchmarks/dashboard_plant.py                     # 200 sensors, 6 h at 10 s, SQLite
    .venv/bin/python benchmarks/dashboard_plant.py --sensors 1000 --hours 2

Fills ``--sensors`` sensors (20 per gateway, 5 gateways per site) with raw indicators every
``--step-s`` over ``--hours``, their hourly rollups over 30 days, 20 alerts with a note each
and 10 level crossings per sensor, then prints the latency p50/max of each query (``--repeat``
runs). The plant overview reads only the last hour of raw indicators (the time index).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fill(store: object, sensors: int, hours: float, step_s: float, now_ms: int) -> int:
    names = [(f"s{i // 100}", f"g{i // 20}", f"x{i}") for i in range(sensors)]
    rows = 0
    steps = int(hours * 3600 / step_s)
    for site, gw, sn in names:
        asset = f"{site}/{gw}/{sn}"
        ind = [{"id": f"{asset}:{k}", "site": site, "gateway": gw, "sensor": sn, "asset": asset,
                "t_ms": now_ms - int((steps - k) * step_s * 1000), "vel_rms_mm_s": 1.0 + k / steps,
                "iso_zone": "B", "iso_group": 2, "iso_foundation": "rigid"} for k in range(steps)]
        store.apply_many("indicator", ind)  # type: ignore[attr-defined]
        roll = [{"site": site, "gateway": gw, "sensor": sn, "asset": asset, "resolution_s": 3600,
                 "window_start": now_ms - (h + 1) * 3_600_000, "window_end": now_ms - h * 3_600_000, "n": 360}
                for h in range(30 * 24)]
        store.apply_many("indicator_rollup", roll)  # type: ignore[attr-defined]
        alerts = [{"id": f"{asset}:a{k}", "site": site, "gateway": gw, "sensor": sn, "asset": asset, "akind": "fault",
                   "state": "raised" if k % 2 == 0 else "cleared", "cls": "OR021", "severity": "warning",
                   "probability": 0.9, "ev_ms": now_ms - k * 3_600_000, "recv_ms": now_ms, "late": 0} for k in range(20)]
        store.apply_many("alert", alerts)  # type: ignore[attr-defined]
        store.apply_many("alert_note", [{"id": f"{a['id']}:n", "alert_id": a["id"], "noted_by": "b", "noted_ms": a["ev_ms"],  # type: ignore[attr-defined]
                                         "note": "checked"} for a in alerts])
        store.apply_many("level_event", [{"id": f"{asset}:l{k}", "site": site, "gateway": gw, "sensor": sn,  # type: ignore[attr-defined]
                                          "asset": asset, "ts_ms": now_ms - k * 7_200_000,
                                          "kind": "raised" if k % 2 else "cleared", "level": "warning" if k % 2 else "normal",
                                          "value": 3.0, "threshold": 2.8, "mode": "iso"} for k in range(10)])
        rows += len(ind) + len(roll) + len(alerts) * 2 + 10
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", type=int, default=200)
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--step-s", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--store", default=None, help="store URL (default: SQLite in a temporary directory)")
    args = p.parse_args(argv)
    from edgevib.cloud.store import Store
    from edgevib.cloud.web.plant import asset_history, plant_overview
    from edgevib.cloud.web.sensor_data import sensors

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or f"sqlite:///{Path(tmp) / 'store.db'}")
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        rows = fill(store, args.sensors, args.hours, args.step_s, now)
        fill_s = time.perf_counter() - t0
        out: dict[str, object] = {"n_sensors": args.sensors, "rows": rows, "fill_s": round(fill_s, 1)}
        for name, fn in (("plant_overview", lambda: plant_overview(store, now_ms=now)),
                         ("asset_history", lambda: asset_history(store, "s0/g0/x0", limit=200)),
                         ("sensors", lambda: sensors(store, now_ms=now))):
            ts = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t) * 1000)
            out[name] = {"p50_ms": round(float(np.median(ts)), 1), "max_ms": round(max(ts), 1)}
        n_tiles = sum(len(g["sensors"]) for s in plant_overview(store, now_ms=now)["sites"] for g in s["gateways"])
        out["tiles"] = n_tiles
        out["history_items"] = len(asset_history(store, "s0/g0/x0", limit=200)["items"])
        store.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
