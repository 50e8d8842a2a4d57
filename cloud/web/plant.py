"""The dashboard's plant overview and per-asset history, read from the store.

* :func:`asset_history`: one asset's (``site/gateway/sensor``) alerts, their acks, labels and
  notes, its level crossings (``level_events``) and its gateway's model changes, newest first,
  as one list (one ``UNION ALL`` query).
* :func:`plant_overview`: site -> gateway -> sensor tiles, each with its worst state: the ISO
  zone of its newest indicator reading, its current level (``level_events``), an open alert
  (its newest alert is ``raised``), and its gateway offline. ``rank`` orders by criticality:

  =====  ==========  ===========================================================
  rank   state       when
  =====  ==========  ===========================================================
  4      alarm       zone D, alarm level, or an open critical alert
  3      offline     the gateway is offline, or no indicators for an hour (state not known)
  2      warning     zone C, warning level, or an open warning alert
  1      watch       zone B, or an open info alert
  0      good        zone A, nothing open
  =====  ==========  ===========================================================

>>> from edgevib.cloud.store import Store
>>> s = Store("sqlite:///:memory:")
>>> s.apply("indicator", {"id": "i1", "site": "p", "gateway": "g", "sensor": "pump", "asset": "p/g/pump",
...                       "t_ms": 1000, "vel_rms_mm_s": 3.1, "iso_zone": "C"})
>>> s.apply("level_event", {"id": "e1", "site": "p", "gateway": "g", "sensor": "pump", "asset": "p/g/pump",
...                         "ts_ms": 1000, "kind": "raised", "level": "warning", "value": 3.1, "threshold": 2.8})
>>> t = plant_overview(s, now_ms=2000)["sites"][0]["gateways"][0]["sensors"][0]
>>> t["state"], t["rank"], t["level"]
('warning', 2, 'warning')
>>> [h["what"] for h in asset_history(s, "p/g/pump")["items"]]
['level raised']
"""

from __future__ import annotations

import json
import time
from typing import Any

from edgevib.cloud.store import Store

STATES = ("good", "watch", "warning", "offline", "alarm")  # index = rank
_ZONE_RANK = {"A": 0, "B": 1, "C": 2, "D": 4}
_LEVEL_RANK = {"normal": 0, "warning": 2, "alarm": 4}
_SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 4}
HISTORY_MAX = 1000
FRESH_MS = 3_600_000  # a sensor's newest indicator reading is looked for this far back
# sensors with hourly rollups or alerts this recent get a tile (the rollups' age index bounds the
# scan: 1000 sensors x 7 days = 168k rows; 30 days took ~1 s per page on a loaded 2-core machine)
KNOWN_MS = 7 * 86_400_000


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def asset_history(store: Store, asset: str, *, limit: int = 200) -> dict[str, Any]:
    """Everything that happened to ``asset`` (site/gateway/sensor), newest first, at most ``limit`` items."""
    limit = max(1, min(int(limit), HISTORY_MAX))
    site, _, rest = asset.partition("/")
    gateway = rest.partition("/")[0]
    # One query over the tables; text is formatted here (string concatenation differs by database).
    rows = store.query(
        "SELECT t, what, who, a, b, c, ref FROM ("
        " SELECT ev_ms AS t, 'alert ' || state AS what, 'edge' AS who, cls AS a, severity AS b,"
        "  probability AS c, id AS ref FROM alerts WHERE asset = ?"
        " UNION ALL SELECT k.acked_ms, 'ack', k.acked_by, k.note, NULL, NULL, k.alert_id"
        "  FROM alert_acks k JOIN alerts x ON x.id = k.alert_id WHERE x.asset = ?"
        " UNION ALL SELECT l.labelled_ms, 'label', l.labelled_by, l.cls, NULL, NULL, l.alert_id"
        "  FROM labels l JOIN alerts x ON x.id = l.alert_id WHERE x.asset = ?"
        " UNION ALL SELECT n.noted_ms, 'note', n.noted_by, n.note, NULL, NULL, n.alert_id"
        "  FROM alert_notes n JOIN alerts x ON x.id = n.alert_id WHERE x.asset = ?"
        " UNION ALL SELECT ts_ms, 'level ' || kind, 'cloud', level, mode, value, id FROM level_events WHERE asset = ?"
        " UNION ALL SELECT ts_ms, 'model changed', 'fleet', body, NULL, NULL, id FROM fleet_events"
        "  WHERE type = 'model_changed' AND site = ? AND gateway = ?"
        ") h ORDER BY t DESC, what LIMIT " + str(limit),
        (asset, asset, asset, asset, asset, site, gateway))
    items: list[dict[str, Any]] = []
    for t, what, who, a, b, c, ref in rows:
        if what.startswith("alert"):
            text = f"{a} ({b}) p={_num(c)}"
        elif what.startswith("level"):
            text = f"{a} ({b} levels): {_num(c)} mm/s" if what != "level baseline" else f"baseline {_num(c)} mm/s learned"
        elif what == "model changed":
            try:
                body = json.loads(a or "{}")
                text = f"{body.get('model_name')} {body.get('model_version')} (sha256 {str(body.get('model_sha256'))[:12]})"
            except ValueError:
                text = str(a)
        else:
            text = a or ""
        items.append({"t_ms": t, "what": what, "by": who, "text": text, "ref": ref,
                      "alert_id": ref if what.startswith(("alert", "ack", "label", "note")) else None})
    return {"asset": asset, "items": items, "limit": limit}


def _worse(cur: tuple[int, str], rank: int, why: str) -> tuple[int, str]:
    return (rank, why) if rank > cur[0] else cur


def plant_overview(store: Store, *, now_ms: int | None = None) -> dict[str, Any]:
    """Every sensor seen (indicators in the last :data:`KNOWN_MS`, or alerts, or level crossings),
    grouped site -> gateway, each with its worst state and why.

    Only the last :data:`FRESH_MS` of raw indicators are read for the newest reading (the time
    index bounds the scan; the whole table would be days x sensors rows); a sensor with hourly
    rollups in the last :data:`KNOWN_MS` but no reading since is ``offline`` ("no indicators").
    """
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    tiles: dict[tuple[str, str, str], dict[str, Any]] = {}

    def tile(site: str, gw: str, sensor: str) -> dict[str, Any]:
        return tiles.setdefault((site, gw, sensor), {
            "site": site, "gateway": gw, "sensor": sensor, "asset": f"{site}/{gw}/{sensor}", "zone": None, "vel": None,
            "t_ms": None, "level": None, "open_alert": None, "gateway_status": None})

    for site, gw, sensor in store.query(
            "SELECT DISTINCT site, gateway, sensor FROM indicator_rollups WHERE resolution_s >= 3600 AND window_start >= ?",
            (now - KNOWN_MS,)):
        tile(site, gw, sensor)
    for site, gw, sensor, t, zone, vel in store.query(
            "SELECT i.site, i.gateway, i.sensor, i.t_ms, i.iso_zone, i.vel_rms_mm_s FROM indicators i JOIN ("
            "SELECT site, gateway, sensor, MAX(t_ms) AS t FROM indicators WHERE t_ms >= ? GROUP BY site, gateway, sensor) m "
            "ON i.site = m.site AND i.gateway = m.gateway AND i.sensor = m.sensor AND i.t_ms = m.t", (now - FRESH_MS,)):
        tile(site, gw, sensor).update(zone=zone, vel=vel, t_ms=t)
    for site, gw, sensor, level in store.query(
            "SELECT e.site, e.gateway, e.sensor, e.level FROM level_events e JOIN ("
            "SELECT asset, MAX(ts_ms) AS t FROM level_events WHERE kind <> 'baseline' GROUP BY asset) m "
            "ON e.asset = m.asset AND e.ts_ms = m.t WHERE e.kind <> 'baseline'"):
        tile(site, gw, sensor)["level"] = level
    for aid, site, gw, sensor, state, severity, cls, ev_ms in store.query(
            "SELECT a.id, a.site, a.gateway, a.sensor, a.state, a.severity, a.cls, a.ev_ms FROM alerts a JOIN ("
            "SELECT site, gateway, sensor, MAX(ev_ms) AS t FROM alerts WHERE ev_ms >= ? GROUP BY site, gateway, sensor) m "
            "ON a.site = m.site AND a.gateway = m.gateway AND a.sensor = m.sensor AND a.ev_ms = m.t", (now - KNOWN_MS,)):
        t = tile(site, gw, sensor)
        if state == "raised":
            t["open_alert"] = {"id": aid, "severity": severity, "cls": cls, "ev_ms": ev_ms}
    gateways = {(r[0], r[1]): r[2] for r in store.query("SELECT site, gateway, status FROM gateways")}
    sites: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (site, gw, _), t in sorted(tiles.items()):
        t["gateway_status"] = gateways.get((site, gw))
        worst = (0, "nothing open")
        if t["zone"] in _ZONE_RANK:
            worst = _worse(worst, _ZONE_RANK[t["zone"]], f"ISO zone {t['zone']} ({_num(t['vel'])} mm/s)")
        if t["level"] in _LEVEL_RANK:
            worst = _worse(worst, _LEVEL_RANK[t["level"]], f"{t['level']} level")
        if t["open_alert"] is not None:
            oa = t["open_alert"]
            worst = _worse(worst, _SEVERITY_RANK.get(oa["severity"], 1), f"open {oa['severity']} alert {oa['cls']}")
        if t["gateway_status"] == "offline":
            worst = _worse(worst, 3, "gateway offline")
        elif t["t_ms"] is None and t["open_alert"] is None:
            worst = _worse(worst, 3, f"no indicators for {FRESH_MS // 60_000} min")
        t["rank"], t["why"], t["state"] = worst[0], worst[1], STATES[worst[0]]
        sites.setdefault(site, {}).setdefault(gw, []).append(t)
    out = []
    for site, gws in sites.items():
        g_list = [{"gateway": g, "status": gateways.get((site, g)), "rank": max(x["rank"] for x in ts),
                   "sensors": sorted(ts, key=lambda x: (-x["rank"], x["sensor"]))} for g, ts in gws.items()]
        g_list.sort(key=lambda g: (-g["rank"], g["gateway"]))
        out.append({"site": site, "rank": max(g["rank"] for g in g_list), "gateways": g_list})
    out.sort(key=lambda s: (-s["rank"], s["site"]))
    counts = {s: sum(1 for t in tiles.values() if t["state"] == s) for s in STATES}
    return {"sites": out, "counts": counts, "states": list(STATES)}
