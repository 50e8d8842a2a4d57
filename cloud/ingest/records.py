"""Validate and flatten one MQTT message into one spool record (a JSON line).

Validation uses the edge's own schema (:mod:`edgevib.protocol`), so edge and cloud
can never disagree on what a valid alert is. A rejected message becomes a ``dead`` record
with a ``reason`` from :data:`edgevib.cloud.errors.DEAD_REASONS`; the Flink job routes it to
the dead-letter table. Nothing here raises on bad input.

The cloud derives two fields the alert schema does not carry:

* ``asset``: the alert's optional ``asset`` field, else ``site/gateway/sensor`` (one
  sensor watches one bearing).
* ``severity``: the edge's ``severity`` field (``info|warning|critical``, the protocol's
  :data:`~edgevib.protocol.SEVERITIES`); for alerts from agents that predate the
  field, :func:`edgevib.protocol.severity_of` derives it from the alert's confidence
  and physics agreement.

>>> from edgevib.protocol import make_alert, dumps
>>> a = make_alert(site="p1", gateway="g1", sensor="de", kind="fault", state="raised",
...                t_ns=1_700_000_000_000_000_000, cls="IR021", probability=0.97, physics="IR", agree=True)
>>> r = normalize("edgevib/v1/p1/g1/alerts", dumps(a), recv_ms=1_700_000_000_100, mid="m1")
>>> r["kind"], r["asset"], r["severity"], r["ev_ms"]
('alert', 'p1/g1/de', 'critical', 1700000000000)
>>> normalize("edgevib/v1/p1/g1/alerts", b"{not json", recv_ms=0, mid="m2")["reason"]
'bad_json'
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from edgevib.protocol import (
    ENVELOPE_LINES,
    PREFIX,
    SEVERITIES,
    TopicInfo,
    parse_alert,
    parse_heartbeat,
    parse_indicators,
    parse_model_status,
    parse_topic,
    severity_of,
)
from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.labels import parse_label

# Weight of one alert of each severity (info, warning, critical) in the health score (cloud/flink/sql.py).
SEVERITY_WEIGHT = dict(zip(SEVERITIES, (0.25, 1.0, 3.0), strict=True))
# Event times further ahead of the bridge's clock than this are refused: one such record
# would push the watermark past every honest record and make them all late.
MAX_FUTURE_MS = 60_000
RAW_KEEP = 1000  # characters of a rejected payload kept for the dead-letter table
ALERT_DETAIL_KEEP = 4000  # characters of an alert's detail JSON (verdict, physics evidence) kept in the store


# The spool's columns, in file order, with their Flink SQL types.
SPOOL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mid", "STRING"), ("kind", "STRING"), ("site", "STRING"), ("gateway", "STRING"),
    ("recv_ms", "BIGINT"), ("ev_ms", "BIGINT"),
    ("id", "STRING"), ("sensor", "STRING"), ("asset", "STRING"), ("akind", "STRING"), ("state", "STRING"),
    ("cls", "STRING"), ("severity", "STRING"), ("probability", "DOUBLE"), ("agree", "BOOLEAN"),
    ("model_name", "STRING"), ("model_version", "STRING"), ("model_sha256", "STRING"),
    ("agent_version", "STRING"), ("uptime_s", "DOUBLE"), ("outbox_pending", "BIGINT"), ("drops_total", "BIGINT"),
    ("status", "STRING"), ("topic", "STRING"), ("reason", "STRING"), ("detail", "STRING"), ("raw", "STRING"),
    ("n", "BIGINT"),
    # condition indicators (edgevib.indicators/1), named as the store's indicators columns;
    # appended, so a line from an older bridge only lacks trailing cells
    ("acc_rms_g", "DOUBLE"), ("acc_peak_g", "DOUBLE"), ("crest", "DOUBLE"), ("kurtosis", "DOUBLE"),
    ("vel_rms_mm_s", "DOUBLE"), ("iso_zone", "STRING"), ("iso_group", "BIGINT"), ("iso_foundation", "STRING"),
    ("env_bpfo_db", "DOUBLE"), ("env_bpfi_db", "DOUBLE"), ("env_bsf2_db", "DOUBLE"), ("env_ftf_db", "DOUBLE"),
    ("rpm", "DOUBLE"), ("rpm_source", "STRING"), ("anomaly_ratio", "DOUBLE"),
    # an alert's fused verdict (edgevib.edge.verdict); its detail (verdict, physics evidence) goes in `detail`
    ("verdict", "STRING"), ("verdict_confidence", "DOUBLE"),
)
SPOOL_COLUMN_NAMES: tuple[str, ...] = tuple(n for n, _ in SPOOL_COLUMNS)


_INDICATOR_FIELDS = ("acc_rms_g", "acc_peak_g", "crest", "kurtosis", "vel_rms_mm_s", "iso_zone", "iso_group",
                     "iso_foundation", "rpm", "rpm_source", "anomaly_ratio")


def indicator_id(doc: dict[str, Any]) -> str:
    """One sensor's indicators at one signal time: one id (a re-delivered message overwrites its row)."""
    return hashlib.sha256(f"{doc['site']}/{doc['gateway']}/{doc['sensor']}/{doc['t_ns']}".encode()).hexdigest()[:24]


def asset_of(doc: dict[str, Any]) -> str:
    a = doc.get("asset")
    if isinstance(a, str) and 0 < len(a) <= 200:
        return a
    return f"{doc['site']}/{doc['gateway']}/{doc['sensor']}"


# topic kind -> (the protocol's parser, spool record kind) for the JSON messages stored as they are
_PARSERS: dict[str, tuple[Callable[[bytes], dict[str, Any]], str]] = {
    "alerts": (parse_alert, "alert"), "heartbeat": (parse_heartbeat, "heartbeat"),
    "model_status": (parse_model_status, "model_status"), "indicators": (parse_indicators, "indicator"),
}


def dead(topic: str, payload: bytes, recv_ms: int, mid: str, reason: str, detail: str,
         site: str = "", gateway: str = "") -> dict[str, Any]:
    return {
        "mid": mid, "kind": "dead", "topic": topic[:300], "site": site, "gateway": gateway,
        "recv_ms": recv_ms, "ev_ms": recv_ms, "reason": reason, "detail": detail[:300],
        "raw": payload[:RAW_KEEP].decode("utf-8", errors="replace"),
    }


@functools.lru_cache(maxsize=4096)
def _topic_info(topic: str, prefix: str) -> TopicInfo | tuple[str, str]:
    """:func:`parse_topic`, or its error as ``(reason, text)``; cached: a bridge sees the same
    few topics per gateway again and again (under a flood, one topic 100,000 times), and an
    exception is returned rather than re-raised (a cached one would grow its traceback)."""
    try:
        return parse_topic(topic, prefix)
    except ProtocolError as exc:
        return exc.reason, str(exc)


def normalize(topic: str, payload: bytes, recv_ms: int, mid: str, prefix: str = PREFIX) -> dict[str, Any]:
    """One MQTT message on a topic under ``prefix`` -> one flat spool record
    (``kind`` alert/heartbeat/status/label/model_status/indicator/dead)."""
    info = _topic_info(topic, prefix)
    if not isinstance(info, TopicInfo):
        return dead(topic, payload, recv_ms, mid, *info)
    base = {"mid": mid, "site": info.site, "gateway": info.gateway, "recv_ms": recv_ms}
    try:
        if info.kind in _PARSERS:
            parse, kind = _PARSERS[info.kind]
            doc = parse(bytes(payload))
        elif info.kind == "status":
            text = bytes(payload).strip().decode("utf-8", errors="replace")
            if text not in ("online", "offline"):
                return dead(topic, payload, recv_ms, mid, "bad_field", f"status={text[:40]!r}; fix: send online or offline",
                            info.site, info.gateway)
            return {**base, "kind": "status", "ev_ms": recv_ms, "status": text}
        elif info.kind == "labels":
            return {**base, **_label_record(payload, info.site, info.gateway)}
        else:
            return dead(topic, payload, recv_ms, mid, "bad_topic", f"kind {info.kind!r} is not for the cloud",
                        info.site, info.gateway)
    except ProtocolError as exc:
        return dead(topic, payload, recv_ms, mid, exc.reason, str(exc), info.site, info.gateway)
    if doc["site"] != info.site or doc["gateway"] != info.gateway:
        return dead(topic, payload, recv_ms, mid, "bad_field",
                    f"payload names {doc['site']}/{doc['gateway']} but the topic {info.site}/{info.gateway}; "
                    "fix: publish on the gateway's own topic", info.site, info.gateway)
    ev_ms = int(doc["t_ns"]) // 1_000_000
    if ev_ms > recv_ms + MAX_FUTURE_MS:
        return dead(topic, payload, recv_ms, mid, "bad_time",
                    f"t_ns={doc['t_ns']} is {(ev_ms - recv_ms) / 1000:.0f} s ahead of the cloud clock; "
                    "fix: sync the gateway clock (NTP) and send nanoseconds", info.site, info.gateway)
    model = doc.get("model") or {}
    rec: dict[str, Any] = {**base, "kind": kind, "ev_ms": ev_ms,
                           "model_name": model.get("name"), "model_version": model.get("version"),
                           "model_sha256": model.get("sha256")}
    if kind == "model_status":  # the agent's verdict on a model update (store table model_status)
        rec.update({"id": doc["update_id"], "status": doc["result"], "reason": doc["reason"],
                    "model_name": doc.get("name"), "model_version": doc.get("version"), "model_sha256": doc.get("sha256"),
                    "detail": str(doc.get("detail") or "")[:300]})
    elif kind == "indicator":  # store tables indicators (raw) and indicator_rollups (the job's windows)
        env = doc["env_db"]
        rec.update({"id": indicator_id(doc), "sensor": doc["sensor"], "asset": asset_of(doc),
                    **{k: doc[k] for k in _INDICATOR_FIELDS},
                    **{f"env_{k}_db": float(env[k]) for k in ENVELOPE_LINES}})
    elif kind == "alert":
        rec.update({
            "id": doc["id"], "sensor": doc["sensor"], "asset": asset_of(doc), "akind": doc["kind"],
            "state": doc["state"], "cls": doc.get("class") or doc["kind"], "severity": severity_of(doc),
            "probability": doc.get("probability"), "agree": doc.get("agree"), **_alert_verdict(doc),
        })
    else:
        rec.update({
            "agent_version": doc["agent_version"], "uptime_s": float(doc["uptime_s"]),
            "outbox_pending": int(doc["outbox_pending"]),
            "drops_total": int(sum(doc["drops"].values())),
        })
    return rec


def _alert_verdict(doc: dict[str, Any]) -> dict[str, Any]:
    """The fused verdict as columns, and the alert's explanation (verdict, physics, evidence) as ``detail`` JSON.

    An alert without ``verdict`` (agents before it) gets its class's ``fault_type`` and no
    confidence. The evidence is dropped when the JSON would exceed :data:`ALERT_DETAIL_KEEP`.
    """
    v = doc.get("verdict") if isinstance(doc.get("verdict"), dict) else None
    detail: dict[str, Any] = {k: doc.get(k) for k in ("fault_type", "physics", "agree", "verdict", "evidence")
                              if doc.get(k) is not None}
    text = json.dumps(detail, separators=(",", ":"), default=str)
    if len(text) > ALERT_DETAIL_KEEP:
        detail.pop("evidence", None)
        detail["evidence_dropped"] = True
        text = json.dumps(detail, separators=(",", ":"), default=str)[:ALERT_DETAIL_KEEP]
    conf = v.get("confidence") if v else None
    return {"verdict": str(v["fault_type"]) if v and v.get("fault_type") else doc.get("fault_type"),
            "verdict_confidence": float(conf) if isinstance(conf, (int, float)) else None,
            "detail": text}


def _label_record(payload: bytes, site: str, gateway: str) -> dict[str, Any]:
    """An operator's label (edgevib.protocol.labels) as a spool record keyed by the alert id."""
    doc = parse_label(bytes(payload))  # raises ProtocolError (reason) on a bad label
    if doc["site"] != site or doc["gateway"] != gateway:
        raise ProtocolError("bad_field", f"label names {doc['site']}/{doc['gateway']} on the topic of {site}/{gateway}",
                            "publish on the labelled gateway's own labels topic")
    return {"kind": "label", "id": doc["alert_id"], "cls": doc["class"], "n": int(doc["n_windows"]),
            "ev_ms": int(doc["t_ns"]) // 1_000_000, "model_name": doc.get("model_name") or "",
            "detail": str(doc.get("labelled_by") or "")[:200]}


def _cell(v: Any) -> str:
    if v is None:
        return ""  # the reader maps an empty cell to NULL
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\r", "\\r").replace("\n", "\\n")  # one record per line, always
    return '"' + s.replace('"', '""') + '"'


def dumps_line(rec: dict[str, Any], columns: tuple[str, ...] = SPOOL_COLUMN_NAMES) -> bytes:
    """A spool line: CSV in :data:`SPOOL_COLUMNS` order (Flink's CSV reader parses it in Java).

    >>> dumps_line({'mid': 'm', 'kind': 'dead', 'raw': 'a,b'}, ('mid', 'kind', 'ev_ms', 'raw')).decode()
    '"m","dead",,"a,b"\\n'
    """
    index = _column_index(columns)
    cells = [""] * len(columns)  # a record sets ~10 of the 45 columns: visit those only
    for k, v in rec.items():
        i = index.get(k)
        if i is not None and v is not None:
            cells[i] = _cell(v)
    return (",".join(cells) + "\n").encode("utf-8")


@functools.lru_cache(maxsize=8)
def _column_index(columns: tuple[str, ...]) -> dict[str, int]:
    return {c: i for i, c in enumerate(columns)}
