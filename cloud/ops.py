"""What operators read and do, on top of the alert store: the dashboard and ``edgevib alerts|fleet``.

Only the standard library (and the store) at import time, so the CLI stays light.

>>> s = Store("sqlite:///:memory:")
>>> s.apply("alert", {"id": "a1", "site": "p", "gateway": "g", "sensor": "de", "asset": "p/g/de",
...                   "akind": "fault", "state": "raised", "cls": "IR007", "severity": "info",
...                   "probability": 0.9, "ev_ms": 1000, "recv_ms": 1001})
>>> [a["id"] for a in alerts(s, AlertFilter(cls="IR"))], alerts(s, AlertFilter(cls="OR"))
(['a1'], [])
>>> ack(s, "a1", by="ana", now_ms=5)["alert_id"], alerts(s)[0]["acked_by"]
('a1', 'ana')
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevib.cloud.errors import CloudError, CloudRetryableError
from edgevib.cloud.store import Store, _col_names

log = logging.getLogger(__name__)

ALERT_COLUMNS = ("id", "site", "gateway", "sensor", "asset", "akind", "state", "cls", "severity", "probability",
                 "ev_ms", "recv_ms", "stored_ms", "model_name", "model_version")


class StoreUnreachable(CloudRetryableError):
    """The store cannot be opened or read (no file, no server): exit code 3 in the CLI."""


class NotFound(CloudError):
    """No alert (or not exactly one) matches the id given."""


def open_store(url: str, *, must_exist: bool = True) -> Store:
    """Open the store for reading; a missing SQLite file is unreachable, not silently created."""
    if must_exist and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():
            raise StoreUnreachable("cloud.ops", f"no store at {str(path)!r}",
                                   "start the cloud job (edgevib cloud run) or pass --store sqlite:///PATH")
    try:
        return Store(url, timeout_s=5.0)
    except CloudRetryableError as exc:
        raise StoreUnreachable(exc.component, exc.problem, exc.fix) from exc
    except (CloudError, sqlite3.Error) as exc:
        raise StoreUnreachable("cloud.ops", f"cannot open {url!r}: {exc}", "check --store / store_url") from exc


@dataclass(frozen=True)
class AlertFilter:
    """Exact site and asset; ``cls`` matches a class or a prefix of one (``IR`` matches ``IR007``)."""

    site: str | None = None
    asset: str | None = None
    cls: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        conds, params = [], []
        if self.site:
            conds.append("a.site = ?")
            params.append(self.site)
        if self.asset:
            conds.append("a.asset = ?")
            params.append(self.asset)
        if self.cls:
            conds.append("a.cls LIKE ?")
            params.append(self.cls.replace("%", "").replace("_", "\\_") + "%")
        return (" AND ".join(conds) or "1=1"), params


def _alert_rows(store: Store, where: str, params: list[Any], tail: str) -> list[dict[str, Any]]:
    cols = ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
    sql = (f"SELECT {cols}, k.acked_by, k.acked_ms, l.cls FROM alerts a "
           "LEFT JOIN alert_acks k ON k.alert_id = a.id LEFT JOIN labels l ON l.alert_id = a.id "
           f"WHERE {where} {tail}")
    if "LIKE" in where:
        sql = sql.replace("LIKE ?", "LIKE ? ESCAPE '\\'")
    try:
        rows = store.query(sql, params)
    except sqlite3.Error as exc:
        raise StoreUnreachable("cloud.ops", f"reading alerts: {exc}", "check the store file") from exc
    names = (*ALERT_COLUMNS, "acked_by", "acked_ms", "label")
    return [dict(zip(names, r, strict=True)) for r in rows]


def alerts(store: Store, flt: AlertFilter | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts matching ``flt``, oldest first."""
    where, params = (flt or AlertFilter()).where()
    rows = _alert_rows(store, where, params, f"ORDER BY a.ev_ms DESC, a.id DESC LIMIT {int(limit)}")
    return rows[::-1]


def alerts_since(store: Store, cursor: tuple[int, str], flt: AlertFilter | None = None,
                 limit: int = 500) -> list[dict[str, Any]]:
    """Alerts stored after ``cursor`` = (stored_ms, id), in store order: what ``--follow`` and SSE push."""
    where, params = (flt or AlertFilter()).where()
    where += " AND (COALESCE(a.stored_ms, 0) > ? OR (COALESCE(a.stored_ms, 0) = ? AND a.id > ?))"
    params += [cursor[0], cursor[0], cursor[1]]
    return _alert_rows(store, where, params, f"ORDER BY COALESCE(a.stored_ms, 0), a.id LIMIT {int(limit)}")


def cursor_now(store: Store) -> tuple[int, str]:
    """The cursor after the newest stored alert (followers start here)."""
    rows = store.query("SELECT COALESCE(stored_ms, 0), id FROM alerts ORDER BY COALESCE(stored_ms, 0) DESC, id DESC LIMIT 1")
    return (int(rows[0][0]), str(rows[0][1])) if rows else (0, "")


def cursor_of(row: dict[str, Any]) -> tuple[int, str]:
    return int(row.get("stored_ms") or 0), str(row["id"])


def resolve_id(store: Store, alert_id: str) -> str:
    """A full alert id from an id or a unique prefix of at least 6 characters."""
    if store.query("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)):
        return alert_id
    if len(alert_id) >= 6:
        hits = store.query("SELECT id FROM alerts WHERE id LIKE ? LIMIT 2", (alert_id.replace("%", "") + "%",))
        if len(hits) == 1:
            return str(hits[0][0])
        if len(hits) > 1:
            raise NotFound("cloud.ops", f"alert id prefix {alert_id!r} matches several alerts", "give more characters")
    raise NotFound("cloud.ops", f"no alert {alert_id!r}", "list alerts with: edgevib alerts")


def ack(store: Store, alert_id: str, *, by: str, now_ms: int, note: str = "") -> dict[str, Any]:
    """Acknowledge one alert (idempotent: a second ack rewrites who and when)."""
    row = {"alert_id": resolve_id(store, alert_id), "acked_by": by, "acked_ms": int(now_ms), "note": note}
    store.apply("alert_ack", row)
    return row


def fleet(store: Store) -> list[dict[str, Any]]:
    """Gateways with status, last heartbeat, outbox, drops and model, plus their newest model verdict."""
    gws = sorted(store.gateways().values(), key=lambda g: (str(g["site"]), str(g["gateway"])))
    names = _col_names("model_status")
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in store.query(f"SELECT {', '.join(names)} FROM model_status ORDER BY ts_ms"):
        d = dict(zip(names, r, strict=True))
        last[(d["site"], d["gateway"])] = d
    for g in gws:
        ms = last.get((g["site"], g["gateway"]))
        g["model_status"] = None if ms is None else {k: ms[k] for k in ("ts_ms", "version", "result", "reason")}
    return gws


def _publisher(broker_url: str | None) -> tuple[Any, Any]:
    """``publish(topic, payload)`` over a short-lived MQTT connection, and its closer; (None, noop) without a broker."""
    if not broker_url:
        return None, lambda: None
    from edgevib.edge.mqtt import MqttLink  # noqa: PLC0415 - paho only when publishing

    link = MqttLink(broker_url, client_id="")
    if not link.wait_connected(5.0):
        link.close()
        raise CloudRetryableError("cloud.ops", f"broker {broker_url} not reachable", "start the broker or drop --broker")

    sent: set[int] = set()

    def publish(topic: str, payload: bytes) -> None:
        mid = link.publish(topic, payload, qos=1)
        if mid is None:
            raise CloudRetryableError("cloud.ops", f"publish to {topic} refused (not connected)", "retry")
        sent.add(mid)

    def close() -> None:
        deadline = time.monotonic() + 5.0
        while sent and time.monotonic() < deadline:  # QoS 1: wait for the broker's PUBACK
            sent.difference_update(link.acked())
            time.sleep(0.05)
        link.close()
        if sent:
            log.warning("label event not confirmed by %s within 5 s", broker_url)

    return publish, close


def apply_label(store: Store, alert_id: str, cls: str, *, by: str, broker_url: str | None = None,
                evidence_dir: Path | None = None) -> dict[str, Any]:
    """Label one alert through :func:`edgevib.cloud.learning.labels.label_alert` (task B's closed loop)."""
    try:
        from edgevib.cloud.learning.labels import label_alert  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise CloudError("cloud.ops", f"labelling needs {exc.name}, which this install lacks",
                         "update edgevib (the closed loop's labels module)") from exc
    full = resolve_id(store, alert_id)
    evidence = evidence_store(store, evidence_dir)
    publish, close = _publisher(broker_url)
    try:
        out = label_alert(store, evidence, full, cls, by=by, publish=publish)
    finally:
        close()
    return {"alert_id": full, "cls": cls, "by": by, "result": out}


def evidence_store(store: Store, root: Path | None) -> Any:
    """The closed loop's EvidenceStore over ``store`` and the dataset directory ``root``; None without one."""
    if root is None or not Path(root).is_dir():
        return None
    from edgevib.cloud.learning.dataset import EvidenceStore  # noqa: PLC0415 - numpy; only when there is evidence

    return EvidenceStore(store, root)
