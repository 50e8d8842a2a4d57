"""The sensor page's data: the newest evidence window's curves and class probabilities over time.

Windows come from the closed loop's evidence store (:class:`edgevib.cloud.learning.dataset.EvidenceStore`,
``[evidence] dataset_dir``); the probabilities also from the sensor's fault alerts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.cloud.errors import CloudError
from edgevib.cloud.ops import evidence_store
from edgevib.cloud.store import Store
from edgevib.cloud.web.plant import FRESH_MS, KNOWN_MS
from edgevib.cloud.web.spectra import sensor_view
from edgevib.models.bearing import GEOMETRIES

log = logging.getLogger(__name__)
DEFAULT_RPM = 1797.0  # the agent's own default (edge.evidence.EvidenceConfig) when a window carries none


def sensors(store: Store, *, now_ms: int | None = None) -> list[dict[str, str]]:
    """Every (site, gateway, sensor) seen in alerts, evidence, level crossings, or indicators
    (hourly rollups of the last :data:`~edgevib.cloud.web.plant.KNOWN_MS` and finer ones of the
    last hour: both by the rollups' age index, not a scan of the raw table)."""
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    rows = store.query("SELECT site, gateway, sensor FROM alerts UNION SELECT site, gateway, sensor FROM evidence "
                       "UNION SELECT site, gateway, sensor FROM level_events "
                       "UNION SELECT site, gateway, sensor FROM indicator_rollups WHERE resolution_s >= 3600 AND window_start >= ? "
                       "UNION SELECT site, gateway, sensor FROM indicator_rollups WHERE resolution_s < 3600 AND window_start >= ? "
                       "ORDER BY 1, 2, 3", (now - KNOWN_MS, now - FRESH_MS))
    return [{"site": s, "gateway": g, "sensor": n} for s, g, n in rows if s and g and n]


def recent_windows(store: Store, site: str, gateway: str, sensor: str, limit: int = 20,
                   evidence_dir: Path | None = None) -> list[dict[str, Any]]:
    """A sensor's newest evidence windows (newest first), each its row plus ``window``; [] without a dataset."""
    es = evidence_store(store, evidence_dir)
    if es is None:
        return []
    out: list[dict[str, Any]] = []
    for row in es.recent(site, gateway, sensor, limit):
        try:
            window = es.load(row) if not out else None  # only the newest is plotted; the rest give probabilities
        except CloudError as exc:
            log.warning("sensor view: %s", exc)
            continue
        out.append({**row, "window": window, "probs": {row["pred_cls"]: row["probability"]} if row["pred_cls"] else {}})
    return out


def sensor_payload(store: Store, site: str, gateway: str, sensor: str, *, geometry: str = "cwru-de-6205",
                   evidence_dir: Path | None = None) -> dict[str, Any]:
    """Curves of the newest window (or None), and (time, class, probability) points from evidence and alerts."""
    geo = GEOMETRIES.get(geometry)
    if geo is None:
        raise CloudError("cloud.dashboard", f"geometry={geometry!r}", f"use one of {', '.join(GEOMETRIES)}")
    wins = recent_windows(store, site, gateway, sensor, 50, evidence_dir)
    view = None
    if wins:
        w = wins[0]
        view = sensor_view(np.asarray(w["window"], dtype=np.float64), float(w["sample_rate"]),
                           float(w["rpm"] or DEFAULT_RPM), geo)
        view.update(t_ms=w["t_ms"], reason=w["reason"], pred_cls=w["pred_cls"], probability=w["probability"],
                    rpm_assumed=w["rpm"] is None)
    points = [{"t_ms": w["t_ms"], "source": "evidence", "probs": w["probs"]} for w in reversed(wins)]
    for cls, p, ev_ms, state in store.query(
            "SELECT cls, probability, ev_ms, state FROM alerts WHERE site = ? AND gateway = ? AND sensor = ? "
            "AND akind = 'fault' ORDER BY ev_ms DESC LIMIT 200", (site, gateway, sensor))[::-1]:
        if p is not None:
            points.append({"t_ms": ev_ms, "source": f"alert {state}", "probs": {cls: p}})
    points.sort(key=lambda x: x["t_ms"] or 0)
    return {"site": site, "gateway": gateway, "sensor": sensor, "geometry": geometry, "view": view,
            "n_windows": len(wins), "probabilities": points}


WATERFALL_MAX_ROWS = 60


def waterfall(store: Store, site: str, gateway: str, sensor: str, *, rows: int = 24, geometry: str = "cwru-de-6205",
              evidence_dir: Path | None = None) -> dict[str, Any]:
    """Envelope spectra of the sensor's newest ``rows`` evidence windows (oldest first) on one
    frequency grid up to 4x the highest fault frequency, with the fault-frequency markers at the
    newest window's speed: the data of the waterfall page."""
    from edgevib.cloud.web.spectra import envelope_row, markers  # noqa: PLC0415

    geo = GEOMETRIES.get(geometry)
    if geo is None:
        raise CloudError("cloud.dashboard", f"geometry={geometry!r}", f"use one of {', '.join(GEOMETRIES)}")
    if not 1 <= rows <= WATERFALL_MAX_ROWS:
        raise CloudError("cloud.dashboard", f"rows={rows}", f"use 1..{WATERFALL_MAX_ROWS}")
    es = evidence_store(store, evidence_dir)
    found = es.recent(site, gateway, sensor, rows) if es is not None else []
    out: list[dict[str, Any]] = []
    mk: dict[str, float] | None = None
    f_max = 0.0
    for row in reversed(found):  # oldest first
        rpm = float(row["rpm"] or DEFAULT_RPM)
        m = markers(rpm, geo)
        if mk is None:
            f_max = min(float(row["sample_rate"]) / 2, 4.0 * max(m["BPFI"], m["BPFO"], 2 * m["BSF"]))
        mk = m
        try:
            x = es.load(row)
        except CloudError as exc:
            log.warning("waterfall: %s", exc)
            continue
        amp, band = envelope_row(x, float(row["sample_rate"]), rpm, geo, f_max)
        out.append({"t_ms": row["t_ms"], "rpm": rpm, "pred_cls": row["pred_cls"], "reason": row["reason"],
                    "band_hz": list(band), "a": amp})
    grid = [round(float(f), 3) for f in np.linspace(0.0, f_max, len(out[0]["a"]))] if out else []
    return {"site": site, "gateway": gateway, "sensor": sensor, "geometry": geometry, "f": grid, "rows": out,
            "markers": mk}
