"""The dashboard's alert detail and sensor trend pages: what the store and evidence say about one alert or sensor.

* :func:`alert_detail`: the alert with its fused verdict (``alerts.verdict``,
  ``verdict_confidence`` and the ``detail`` JSON the ingest keeps: physics verdict, agreement,
  physics evidence), the evidence window at the alert (the one uploaded for it, else the
  sensor's nearest within :data:`EVIDENCE_NEAR_MS`) as waveform / spectrum / envelope
  spectrum (:func:`edgevib.cloud.web.spectra.sensor_view`), the velocity-RMS trend of its sensor
  over +-:data:`TREND_AROUND_MS`, and its history (ack, label, notes).
* :func:`add_note`: one operator note (``alert_notes``), validated.
* :func:`sensor_trends`: one sensor's indicators over a time range, from ``indicator_rollups``
  (1 h windows over long ranges, 1 min over medium ones) or the raw ``indicators`` rows, with
  the ISO 10816-3 zone boundaries of its machine group and foundation and its alerts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.cloud.errors import CloudError
from edgevib.cloud.ops import NotFound, evidence_store, resolve_id
from edgevib.cloud.store import Store, _col_names
from edgevib.cloud.web.sensor_data import DEFAULT_RPM
from edgevib.cloud.web.spectra import sensor_view
from edgevib.models.bearing import GEOMETRIES

from edgevib.protocol import ISO_BOUNDARIES

log = logging.getLogger(__name__)

NOTE_MAX = 2000  # characters of one note
BY_MAX = 80  # characters of the note's author
EVIDENCE_NEAR_MS = 60_000  # an evidence window this close to the alert stands for it when none was uploaded for it
TREND_AROUND_MS = 3_600_000  # the alert page's indicator trend: +-1 h
MAX_TREND_POINTS = 5000
RAW_MAX_SPAN_MS = 6 * 3_600_000  # up to this range: raw indicators rows
# up to this: 1-min rollups; beyond: 1-h rollups. 3 days = 4,320 points, inside MAX_TREND_POINTS
# (7 days of minutes, 10,080 points, showed only the first 3.5 days)
MINUTE_MAX_SPAN_MS = 3 * 86_400_000


def _notes(store: Store, alert_id: str) -> list[dict[str, Any]]:
    names = _col_names("alert_notes")
    return [dict(zip(names, r, strict=True)) for r in
            store.query(f"SELECT {', '.join(names)} FROM alert_notes WHERE alert_id = ? ORDER BY noted_ms, id", (alert_id,))]


def add_note(store: Store, alert_id: str, note: Any, *, by: Any = "dashboard", now_ms: int) -> dict[str, Any]:
    """Store one note on an alert; ``ValueError`` on an empty, non-text or too long note or author."""
    if not isinstance(note, str) or not note.strip():
        raise ValueError('send {"note": "text"} with a non-empty note')
    if len(note) > NOTE_MAX:
        raise ValueError(f"note has {len(note)} characters; at most {NOTE_MAX}")
    if not isinstance(by, str) or not by.strip() or len(by) > BY_MAX:
        raise ValueError(f"'by' must be a non-empty string of at most {BY_MAX} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in note):
        raise ValueError("note holds control characters")
    aid = resolve_id(store, alert_id)
    row = {"alert_id": aid, "noted_by": by.strip(), "noted_ms": int(now_ms), "note": note.strip()}
    row["id"] = hashlib.sha256(f"{aid}/{now_ms}/{row['noted_by']}/{row['note']}".encode()).hexdigest()[:24]
    store.apply("alert_note", row)
    return row


def _alert_row(store: Store, alert_id: str) -> dict[str, Any]:
    names = _col_names("alerts")
    rows = store.query(f"SELECT {', '.join(names)} FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise NotFound("cloud.alert_view", f"no alert {alert_id!r}", "list alerts with: edgevib alerts")
    a = dict(zip(names, rows[0], strict=True))
    try:
        detail = json.loads(a.pop("detail") or "{}")
    except ValueError:
        detail = {}
    a["detail"] = detail if isinstance(detail, dict) else {}
    return a


def verdict_of(a: dict[str, Any]) -> dict[str, Any]:
    """The fused verdict to show: the edge's when it sent one, else the class's fault type (older agents)."""
    v = a["detail"].get("verdict") if isinstance(a["detail"].get("verdict"), dict) else {}
    fault_type = a.get("verdict") or v.get("fault_type") or a["detail"].get("fault_type")
    if not fault_type and a.get("cls"):
        fault_type = "normal" if a["cls"] == "normal" else "".join(ch for ch in str(a["cls"]) if ch.isalpha())
    return {"fault_type": fault_type or "-", "confidence": a.get("verdict_confidence", v.get("confidence")),
            "carried_by": v.get("carried_by") or [], "fused": bool(v) or a.get("verdict_confidence") is not None,
            "physics": a["detail"].get("physics", v.get("physics")), "agree": a["detail"].get("agree"),
            "anomaly_ratio": v.get("anomaly_ratio")}


def _evidence_at(store: Store, a: dict[str, Any], evidence_dir: Path | None, geometry: str) -> dict[str, Any] | None:
    es = evidence_store(store, evidence_dir)
    if es is None:
        return None
    # The windows behind the alert are the K of its debounce, oldest first; the first may still
    # be one the model called something else: show the newest that agrees with the alert.
    rows = sorted(es.for_alert(a["id"]), key=lambda r: (r["pred_cls"] != a["cls"], -int(r["t_ms"] or 0)))
    if not rows:
        rows = [r for r in es.recent(a["site"], a["gateway"], a["sensor"], 200)
                if r["t_ms"] is not None and abs(int(r["t_ms"]) - int(a["ev_ms"] or 0)) <= EVIDENCE_NEAR_MS]
        rows.sort(key=lambda r: abs(int(r["t_ms"]) - int(a["ev_ms"] or 0)))
    for row in rows:
        try:
            x = np.asarray(es.load(row), dtype=np.float64)
        except CloudError as exc:
            log.warning("alert view: %s", exc)
            continue
        view = sensor_view(x, float(row["sample_rate"]), float(row["rpm"] or DEFAULT_RPM), GEOMETRIES[geometry])
        view.update(t_ms=row["t_ms"], evidence_id=row["id"], for_alert=row.get("alert_id") == a["id"],
                    pred_cls=row["pred_cls"], probability=row["probability"], rpm_assumed=row["rpm"] is None)
        return view
    return None


def _indicator_rows(store: Store, site: str, gateway: str, sensor: str, t0: int, t1: int) -> list[dict[str, Any]]:
    cols = ("t_ms", "vel_rms_mm_s", "acc_rms_g", "kurtosis", "crest", "iso_zone", "iso_group", "iso_foundation")
    rows = store.query(f"SELECT {', '.join(cols)} FROM indicators WHERE site = ? AND gateway = ? AND sensor = ? "
                       f"AND t_ms >= ? AND t_ms <= ? ORDER BY t_ms LIMIT {MAX_TREND_POINTS}", (site, gateway, sensor, t0, t1))
    return [dict(zip(cols, r, strict=True)) for r in rows]


def alert_detail(store: Store, alert_id: str, *, geometry: str = "cwru-de-6205",
                 evidence_dir: Path | None = None) -> dict[str, Any]:
    """Everything the alert page shows (see the module doc); :class:`NotFound` for an unknown id."""
    if geometry not in GEOMETRIES:
        raise CloudError("cloud.dashboard", f"geometry={geometry!r}", f"use one of {', '.join(GEOMETRIES)}")
    a = _alert_row(store, resolve_id(store, alert_id))
    ack = store.query("SELECT acked_by, acked_ms, note FROM alert_acks WHERE alert_id = ?", (a["id"],))
    lab = store.query("SELECT cls, labelled_by, labelled_ms FROM labels WHERE alert_id = ?", (a["id"],))
    notes = _notes(store, a["id"])
    history: list[dict[str, Any]] = [{"t_ms": a["ev_ms"], "what": "raised" if a["state"] == "raised" else a["state"],
                                      "by": "edge", "text": f"{a['cls']} p={a['probability']}"}]
    if ack:
        history.append({"t_ms": ack[0][1], "what": "ack", "by": ack[0][0], "text": ack[0][2] or ""})
    if lab:
        history.append({"t_ms": lab[0][2], "what": "label", "by": lab[0][1], "text": lab[0][0]})
    history += [{"t_ms": n["noted_ms"], "what": "note", "by": n["noted_by"], "text": n["note"]} for n in notes]
    history.sort(key=lambda h: h["t_ms"] or 0)
    ev = int(a["ev_ms"] or 0)
    trend = _indicator_rows(store, a["site"], a["gateway"], a["sensor"], ev - TREND_AROUND_MS, ev + TREND_AROUND_MS)
    evidence = a["detail"].get("evidence") if isinstance(a["detail"].get("evidence"), dict) else None
    view = _evidence_at(store, a, evidence_dir, geometry)
    probs: dict[str, float] = {}
    if isinstance(a["probability"], (int, float)) and a["cls"]:
        probs[str(a["cls"])] = float(a["probability"])
    if view is not None and view.get("pred_cls") and isinstance(view.get("probability"), (int, float)):
        probs.setdefault(str(view["pred_cls"]), float(view["probability"]))
    return {"alert": {k: v for k, v in a.items() if k != "detail"}, "verdict": verdict_of(a),
            "physics_evidence": evidence, "class_probabilities": probs, "view": view, "geometry": geometry,
            "trend": trend, "trend_window_ms": [ev - TREND_AROUND_MS, ev + TREND_AROUND_MS],
            "ack": {"by": ack[0][0], "ms": ack[0][1], "note": ack[0][2]} if ack else None,
            "label": lab[0][0] if lab else None, "notes": notes, "history": history,
            "note_max": NOTE_MAX}


def zone_lines(group: int, foundation: str) -> dict[str, float]:
    """Velocity RMS (mm/s) at which zones B, C and D start for this ISO 10816-3 group and foundation."""
    b, c, d = ISO_BOUNDARIES[(int(group), str(foundation))]
    return {"B": b, "C": c, "D": d}


def sensor_trends(store: Store, site: str, gateway: str, sensor: str, *, since_ms: int, until_ms: int,
                  resolution: str = "auto") -> dict[str, Any]:
    """Indicators of one sensor in [since_ms, until_ms]: rollups or raw rows, zone lines and alerts.

    ``resolution``: ``raw``, ``60`` (1-min rollups), ``3600`` (1-h) or ``auto`` (by the span:
    raw up to 6 h, 1 min up to 3 days, then 1 h). A rollup resolution with no rows falls back
    to the raw rows (a store the job has not rolled up yet).
    """
    if until_ms <= since_ms:
        raise ValueError("until_ms must be after since_ms")
    if resolution not in ("auto", "raw", "60", "3600"):
        raise ValueError("resolution is one of auto, raw, 60, 3600")
    span = until_ms - since_ms
    res = resolution if resolution != "auto" else (
        "raw" if span <= RAW_MAX_SPAN_MS else "60" if span <= MINUTE_MAX_SPAN_MS else "3600")
    series: list[dict[str, Any]] = []
    used = "raw"
    if res != "raw":
        cols = ("window_start", "window_end", "n", "vel_min", "vel_mean", "vel_max", "acc_rms_mean", "kurtosis_mean",
                "worst_zone")
        rows = store.query(f"SELECT {', '.join(cols)} FROM indicator_rollups WHERE site = ? AND gateway = ? AND sensor = ? "
                           f"AND resolution_s = ? AND window_start >= ? AND window_start <= ? ORDER BY window_start "
                           f"LIMIT {MAX_TREND_POINTS}", (site, gateway, sensor, int(res), since_ms, until_ms))
        if rows:
            used = res
            for r in rows:
                d = dict(zip(cols, r, strict=True))
                series.append({"t_ms": d["window_start"], "vel": d["vel_mean"], "vel_min": d["vel_min"],
                               "vel_max": d["vel_max"], "acc_rms": d["acc_rms_mean"], "kurtosis": d["kurtosis_mean"],
                               "zone": d["worst_zone"], "n": d["n"]})
    if used == "raw":
        series = [{"t_ms": r["t_ms"], "vel": r["vel_rms_mm_s"], "acc_rms": r["acc_rms_g"], "kurtosis": r["kurtosis"],
                   "crest": r["crest"], "zone": r["iso_zone"]}
                  for r in _indicator_rows(store, site, gateway, sensor, since_ms, until_ms)]
    latest = store.query("SELECT iso_group, iso_foundation, iso_zone, vel_rms_mm_s, t_ms FROM indicators "
                         "WHERE site = ? AND gateway = ? AND sensor = ? ORDER BY t_ms DESC LIMIT 1", (site, gateway, sensor))
    group, foundation = (int(latest[0][0]), str(latest[0][1])) if latest and latest[0][0] is not None else (2, "rigid")
    alerts = [{"id": i, "t_ms": t, "cls": c, "state": s, "severity": v, "verdict": vd} for i, t, c, s, v, vd in store.query(
        "SELECT id, ev_ms, cls, state, severity, verdict FROM alerts WHERE site = ? AND gateway = ? AND sensor = ? "
        "AND ev_ms >= ? AND ev_ms <= ? ORDER BY ev_ms LIMIT 500", (site, gateway, sensor, since_ms, until_ms))]
    levels = [{"id": i, "t_ms": t, "kind": k, "level": lv, "value": v, "threshold": th, "mode": m}
              for i, t, k, lv, v, th, m in store.query(
                  "SELECT id, ts_ms, kind, level, value, threshold, mode FROM level_events WHERE site = ? AND gateway = ? "
                  "AND sensor = ? AND ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms LIMIT 500",
                  (site, gateway, sensor, since_ms, until_ms))]
    model_changes = []
    for t, body in store.query("SELECT ts_ms, body FROM fleet_events WHERE type = 'model_changed' AND site = ? "
                               "AND gateway = ? AND ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms LIMIT 100",
                               (site, gateway, since_ms, until_ms)):
        try:
            b = json.loads(body or "{}")
        except ValueError:
            b = {}
        model_changes.append({"t_ms": t, "model_name": b.get("model_name"), "model_version": b.get("model_version")})
    # the levels in force: the newest crossing's (absolute or baseline levels are not the ISO lines)
    last = store.query("SELECT mode, detail FROM level_events WHERE site = ? AND gateway = ? AND sensor = ? "
                       "AND kind <> 'baseline' ORDER BY ts_ms DESC LIMIT 1", (site, gateway, sensor))
    in_force = None
    if last:
        try:
            det = json.loads(last[0][1] or "{}")
            in_force = {"mode": last[0][0], "warning": det.get("warning"), "alarm": det.get("alarm"),
                        "baseline": det.get("baseline")}
        except ValueError:
            in_force = None
    return {"site": site, "gateway": gateway, "sensor": sensor, "since_ms": since_ms, "until_ms": until_ms,
            "resolution": used, "requested": res, "series": series, "alerts": alerts,
            "level_events": levels, "levels": in_force, "model_changes": model_changes,
            "iso": {"group": group, "foundation": foundation, "zones": zone_lines(group, foundation),
                    "latest_zone": latest[0][2] if latest else None, "latest_vel": latest[0][3] if latest else None}}
