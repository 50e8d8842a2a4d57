"""The JSON messages of the wire: alerts, heartbeats, model verdicts, indicators; severity.

Topics live in :mod:`edgevib.protocol.topics`, binary frames in :mod:`edgevib.protocol.frames`,
evidence in :mod:`edgevib.protocol.evidence`, model updates in :mod:`edgevib.protocol.updates`
and operators' labels in :mod:`edgevib.protocol.labels`. Every parser takes bytes, returns a
validated dict or raises :class:`~edgevib.protocol.errors.ProtocolError` with a ``reason``.

>>> a = make_alert(site="plant1", gateway="gw-7", sensor="de", kind="fault", state="raised",
...                t_ns=0, cls="IR007", probability=0.97)
>>> parse_alert(dumps(a))["fault_type"]
'IR'
>>> a["severity"]
'warning'
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from edgevib.models.classes import FAULT_TYPES, fault_type
from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.topics import check_name
from edgevib.protocol.updates import RESULTS as UPDATE_RESULTS
from edgevib.protocol.updates import STATUS_SCHEMA

__all__ = ["ISO_BOUNDARIES", "ISO_GROUPS", "ALERT_KINDS", "ALERT_SCHEMA", "ALERT_STATES", "CONFIDENT_PROBABILITY", "ENVELOPE_LINES",
           "HEARTBEAT_SCHEMA", "INDICATORS_SCHEMA", "ISO_FOUNDATIONS", "ISO_ZONES", "MAX_MESSAGE_BYTES",
           "SEVERITIES", "SPEED_SOURCES", "VERDICTS", "VERDICT_EVIDENCE", "derive_severity", "dumps", "make_alert",
           "make_heartbeat", "make_indicators", "parse_alert", "parse_heartbeat", "parse_indicators",
           "parse_model_status", "severity_at_least", "severity_of", "validate_alert", "validate_heartbeat",
           "validate_indicators", "validate_model_status"]

ALERT_SCHEMA = "edgevib.alert/1"
HEARTBEAT_SCHEMA = "edgevib.heartbeat/1"
INDICATORS_SCHEMA = "edgevib.indicators/1"
# Indicators' vocabularies and the ISO zone table (edgevib.edge.indicators computes them).
ISO_ZONES: tuple[str, ...] = ("A", "B", "C", "D")
ISO_FOUNDATIONS: tuple[str, ...] = ("rigid", "flexible")
ISO_GROUPS: tuple[int, ...] = (1, 2)
# ISO 10816-3:2009 Annex A (Tables A.1, A.2), zone boundaries A/B, B/C, C/D of the broadband
# velocity RMS in mm/s, measured on bearing housings. Group 1: large machines, 300 kW-50 MW
# (or shaft height >= 315 mm); group 2: medium, 15-300 kW (shaft height 160-315 mm).
# ISO 20816-3:2022 replaced 10816-3 (and changed how zones A and B are told apart); the
# boundaries here are 10816-3's, as most monitoring products still apply them. A value on a
# boundary stays in the lower zone.
# Zone A: newly commissioned; B: unrestricted long-term operation; C: not for long-term
# operation (warning); D: damage likely (alarm). docs/protocol.md lists the sources.
ISO_BOUNDARIES: dict[tuple[int, str], tuple[float, float, float]] = {
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}
ENVELOPE_LINES: tuple[str, ...] = ("bpfo", "bpfi", "bsf2", "ftf")
SPEED_SOURCES: tuple[str, ...] = ("configured", "topic", "estimated")  # where the speed in use came from
ALERT_KINDS: tuple[str, ...] = ("fault", "anomaly")
ALERT_STATES: tuple[str, ...] = ("raised", "cleared")
# The one severity vocabulary of edge, cloud, store and dashboard, least to most severe.
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
# A raised fault alert's fused verdict (edge/verdict.py): a fault type, or unknown (clearly
# abnormal, type not established); and what carried it.
VERDICTS: tuple[str, ...] = ("B", "IR", "OR", "unknown")
VERDICT_EVIDENCE: tuple[str, ...] = ("model", "physics", "anomaly")
# make_alert's rule: a fault probability at least this high counts as confident.
CONFIDENT_PROBABILITY = 0.95
MAX_MESSAGE_BYTES = 256 * 1024


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes; NaN/inf are refused (they are not JSON)."""
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise ProtocolError("bad_field", f"not JSON-serialisable: {exc}", "pass finite numbers, strings, lists, dicts") from exc


def _num(doc: Mapping[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf,
         optional: bool = False, integer: bool = False) -> None:
    if key not in doc or doc[key] is None:
        if optional:
            return
        raise ProtocolError("missing_field", f"field {key!r} missing", f"set {key}")
    v = doc[key]
    ok_type = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, ok_type) or not (lo <= v <= hi) or not math.isfinite(v):
        raise ProtocolError("bad_field", f"{key}={v!r}", f"use a finite {'integer' if integer else 'number'} in [{lo}, {hi}]")


def _str(doc: Mapping[str, Any], key: str, choices: tuple[str, ...] | None = None, optional: bool = False) -> None:
    if key not in doc or doc[key] is None:
        if optional:
            return
        raise ProtocolError("missing_field", f"field {key!r} missing", f"set {key}")
    v = doc[key]
    if not isinstance(v, str) or len(v) > 256 or (choices is not None and v not in choices):
        raise ProtocolError("bad_field", f"{key}={str(v)[:80]!r}",
                            f"use one of {', '.join(choices)}" if choices else "use a string of <= 256 characters")


def _model(doc: Mapping[str, Any]) -> None:
    m = doc.get("model")
    if m is None:
        return
    if not isinstance(m, dict):
        raise ProtocolError("bad_field", f"model={m!r}", "use {name, version, sha256}")
    for k in ("name", "version", "sha256"):
        _str(m, k)


def _object(doc: Any, what: str, schema: str) -> None:
    """A JSON object of ``schema`` (the first check of every message), else ProtocolError."""
    if not isinstance(doc, dict):
        raise ProtocolError("bad_json", f"{what} is a {type(doc).__name__}", "send a JSON object")
    if doc.get("schema") != schema:
        raise ProtocolError("bad_schema", f"schema={str(doc.get('schema'))[:40]!r}", f"use {schema!r}")


def _names(doc: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Each of ``keys`` present and a valid site/gateway/sensor name."""
    for k in keys:
        if k not in doc:
            raise ProtocolError("missing_field", f"field {k!r} missing", f"set {k}")
        check_name(doc[k], k)


def _alert_id(site: str, gateway: str, sensor: str, kind: str, state: str, t_ns: int) -> str:
    # Deterministic: a replayed alert keeps its id, so the cloud can de-duplicate it.
    return hashlib.sha256(f"{site}/{gateway}/{sensor}/{kind}/{state}/{t_ns}".encode()).hexdigest()[:20]


def severity_at_least(severity: str, minimum: str) -> bool:
    """Whether ``severity`` ranks at or above ``minimum`` in :data:`SEVERITIES`."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


def derive_severity(doc: Mapping[str, Any]) -> str:
    """The severity an alert's own fields support (the rule :func:`make_alert` applies at the edge).

    ``critical``: a raised alert that is confident (fault probability >= 0.95, or an anomaly)
    and confirmed by the envelope-spectrum physics check (``agree``); ``warning``: one of
    the two; ``info``: neither, a ``normal`` class, or a cleared alert. Only the evidence
    counts, never the class name's fault size, which fault-type models (IR/OR/B) lack.
    """
    if doc.get("state") != "raised" or doc.get("fault_type") == "normal":
        return "info"
    p = doc.get("probability")
    confident = doc.get("kind") == "anomaly" or (isinstance(p, (int, float)) and p >= CONFIDENT_PROBABILITY)
    agrees = doc.get("agree") is True
    return "critical" if confident and agrees else "warning" if confident or agrees else "info"


def severity_of(doc: Mapping[str, Any]) -> str:
    """A validated alert's severity: the edge's ``severity`` field, else (agents that predate
    the field) :func:`derive_severity` of its fields. The only place a missing one is filled in."""
    given = doc.get("severity")
    return given if isinstance(given, str) and given in SEVERITIES else derive_severity(doc)


def make_alert(*, site: str, gateway: str, sensor: str, kind: str, state: str, t_ns: int,
               cls: str | None = None, probability: float | None = None,
               anomaly_score: float | None = None, anomaly_threshold: float | None = None,
               physics: str | None = None, agree: bool | None = None,
               model: Mapping[str, str] | None = None, evidence: Mapping[str, Any] | None = None,
               windows: int | None = None, severity: str | None = None) -> dict[str, Any]:
    """Build (and validate) an alert dict; serialise it with :func:`dumps`.

    ``severity`` (one of :data:`SEVERITIES`) defaults to :func:`derive_severity` of the
    other fields: the edge decides it, where the evidence is."""
    doc: dict[str, Any] = {
        "schema": ALERT_SCHEMA,
        "id": _alert_id(site, gateway, sensor, kind, state, t_ns),
        "site": site, "gateway": gateway, "sensor": sensor,
        "kind": kind, "state": state, "t_ns": t_ns,
        "class": cls, "fault_type": fault_type(cls) if isinstance(cls, str) and _valid_class(cls) else None,
        "probability": probability,
        "anomaly_score": anomaly_score, "anomaly_threshold": anomaly_threshold,
        "physics": physics, "agree": agree,
        "model": dict(model) if model is not None else None,
        "evidence": dict(evidence) if evidence is not None else None,
        "windows": windows,
    }
    doc["severity"] = severity if severity is not None else derive_severity(doc)
    validate_alert(doc)
    return doc


def _valid_class(cls: str) -> bool:
    try:
        fault_type(cls)
    except Exception:
        return False
    return True


def validate_alert(doc: Any) -> dict[str, Any]:
    """Check an alert dict against ``edgevib.alert/1``; return it or raise ProtocolError."""
    _object(doc, "alert", ALERT_SCHEMA)
    _str(doc, "id")
    _names(doc, ("site", "gateway", "sensor"))
    _str(doc, "kind", ALERT_KINDS)
    _str(doc, "state", ALERT_STATES)
    _num(doc, "t_ns", -(2**63), 2**63 - 1, integer=True)
    if doc["kind"] == "fault":
        _str(doc, "class")
        if not _valid_class(doc["class"]):
            raise ProtocolError("bad_field", f"class={doc['class']!r}", "use a class name such as IR007 or normal")
        if doc.get("fault_type") != fault_type(doc["class"]):
            raise ProtocolError("bad_field", f"fault_type={doc.get('fault_type')!r}", "use fault_type(class)")
        _num(doc, "probability", 0.0, 1.0, optional=doc["state"] == "cleared")
    else:
        _num(doc, "anomaly_score", 0.0, optional=doc["state"] == "cleared")
        _num(doc, "anomaly_threshold", 0.0, optional=True)
    _str(doc, "physics", FAULT_TYPES, optional=True)
    if doc.get("agree") is not None and not isinstance(doc["agree"], bool):
        raise ProtocolError("bad_field", f"agree={doc['agree']!r}", "use true, false or null")
    _model(doc)
    if doc.get("evidence") is not None and not isinstance(doc["evidence"], dict):
        raise ProtocolError("bad_field", "evidence is not an object", "use a JSON object")
    _num(doc, "windows", 0, integer=True, optional=True)
    _str(doc, "severity", SEVERITIES, optional=True)  # optional: agents before it; see severity_of
    if doc.get("verdict") is not None:
        _verdict(doc["verdict"])
    return doc


def _verdict(v: Any) -> None:
    if not isinstance(v, dict):
        raise ProtocolError("bad_field", "verdict is not an object", "send {fault_type, confidence, carried_by, ...}")
    _str(v, "fault_type", VERDICTS)
    _num(v, "confidence", 0.0, 1.0)
    by = v.get("carried_by")
    if not isinstance(by, list) or not by or any(b not in VERDICT_EVIDENCE for b in by):
        raise ProtocolError("bad_field", f"verdict.carried_by={str(by)[:60]!r}",
                            f"list one or more of {', '.join(VERDICT_EVIDENCE)}")


def make_heartbeat(*, site: str, gateway: str, t_ns: int, uptime_s: float,
                   model: Mapping[str, str] | None = None,
                   sensors: Mapping[str, Mapping[str, int | float]] | None = None,
                   drops: Mapping[str, int] | None = None,
                   counters: Mapping[str, int | float] | None = None,
                   resources: Mapping[str, float] | None = None,
                   outbox_pending: int = 0, agent_version: str = "") -> dict[str, Any]:
    """Build (and validate) a heartbeat: per-sensor counters, drops per reason, resources."""
    doc: dict[str, Any] = {
        "schema": HEARTBEAT_SCHEMA, "site": site, "gateway": gateway, "t_ns": t_ns,
        "uptime_s": uptime_s, "model": dict(model) if model is not None else None,
        "sensors": {k: dict(v) for k, v in (sensors or {}).items()},
        "drops": dict(drops or {}), "counters": dict(counters or {}),
        "resources": dict(resources or {}), "outbox_pending": outbox_pending,
        "agent_version": agent_version,
    }
    validate_heartbeat(doc)
    return doc


def _numbers(doc: Mapping[str, Any], key: str) -> None:
    v = doc.get(key)
    if not isinstance(v, dict):
        raise ProtocolError("bad_field", f"{key} is not an object", "use a JSON object of numbers")
    for k in v:
        _num(v, k)


def validate_heartbeat(doc: Any) -> dict[str, Any]:
    """Check a heartbeat dict against ``edgevib.heartbeat/1``; return it or raise ProtocolError."""
    _object(doc, "heartbeat", HEARTBEAT_SCHEMA)
    _names(doc, ("site", "gateway"))
    _num(doc, "t_ns", -(2**63), 2**63 - 1, integer=True)
    _num(doc, "uptime_s", 0.0)
    _num(doc, "outbox_pending", 0, integer=True)
    _str(doc, "agent_version")
    _model(doc)
    sensors = doc.get("sensors")
    if not isinstance(sensors, dict):
        raise ProtocolError("bad_field", "sensors is not an object", "use {sensor: {counter: number}}")
    for name, counters in sensors.items():
        check_name(name, "sensor")
        if not isinstance(counters, dict):
            raise ProtocolError("bad_field", f"sensors.{name} is not an object", "use {counter: number}")
        for k in counters:
            _num(counters, k)
    for key in ("drops", "counters", "resources"):
        _numbers(doc, key)
    return doc


_DECODER = json.JSONDecoder(parse_constant=lambda c: math.nan)  # NaN/Infinity as NaN, as json.loads did


def _load(payload: bytes, what: str) -> Any:
    if not isinstance(payload, (bytes, bytearray)):
        raise ProtocolError("bad_json", f"{what} payload of type {type(payload).__name__}", "pass bytes")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"{what} of {len(payload)} bytes", f"keep messages under {MAX_MESSAGE_BYTES} bytes")
    try:
        # json.loads(bytes) with a keyword builds a decoder per call: half its time for a small
        # message. A payload opening with "{" and no NUL next is UTF-8 to json.detect_encoding
        # (no BOM starts with "{"; a NUL second byte would mean UTF-16/32): skip asking it.
        enc = "utf-8" if payload[:1] == b"{" and payload[1:2] != b"\0" else json.detect_encoding(payload)
        return _DECODER.decode(payload.decode(enc, "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"{what} is not JSON ({str(exc)[:60]})", "send UTF-8 JSON") from exc


def parse_alert(payload: bytes) -> dict[str, Any]:
    """Bytes from the ``alerts`` topic -> validated alert dict."""
    return validate_alert(_load(payload, "alert"))


def parse_heartbeat(payload: bytes) -> dict[str, Any]:
    """Bytes from the ``heartbeat`` topic -> validated heartbeat dict."""
    return validate_heartbeat(_load(payload, "heartbeat"))


def validate_model_status(doc: Any) -> dict[str, Any]:
    """Check an agent's verdict against ``edgevib.model_status/1`` (docs/protocol.md); return it or raise."""
    _object(doc, "model_status", STATUS_SCHEMA)
    _names(doc, ("site", "gateway"))
    _num(doc, "t_ns", -(2**63), 2**63 - 1, integer=True)
    _str(doc, "update_id")
    _str(doc, "result", UPDATE_RESULTS)
    _str(doc, "reason")  # a code (docs/protocol.md); not a closed set, so newer agents' codes still land
    for k in ("name", "version", "sha256", "detail"):
        _str(doc, k, optional=True)  # null for an update that never had a readable manifest
    return doc


def parse_model_status(payload: bytes) -> dict[str, Any]:
    """Bytes from the ``model_status`` topic -> validated verdict dict."""
    return validate_model_status(_load(payload, "model_status"))


def make_indicators(*, site: str, gateway: str, sensor: str, t_ns: int, duration_s: float, sample_rate: float,
                    acc_rms_g: float, acc_peak_g: float, crest: float, kurtosis: float, vel_rms_mm_s: float,
                    iso_zone: str, iso_group: int, iso_foundation: str, env_db: Mapping[str, float],
                    rpm: float, rpm_source: str, anomaly_ratio: float | None = None,
                    asset: str | None = None, vel_band_hz: tuple[float, float] = (10.0, 1000.0)) -> dict[str, Any]:
    """Build (and validate) one sensor's condition indicators (``edgevib.indicators/1``).

    ``t_ns``: signal time at the end of the stretch they were computed from; units are in
    the field names (g, mm/s, Hz, rpm, dB); docs/protocol.md describes every field."""
    doc: dict[str, Any] = {
        "schema": INDICATORS_SCHEMA, "site": site, "gateway": gateway, "sensor": sensor, "asset": asset,
        "t_ns": t_ns, "duration_s": duration_s, "sample_rate": sample_rate,
        "acc_rms_g": acc_rms_g, "acc_peak_g": acc_peak_g, "crest": crest, "kurtosis": kurtosis,
        "vel_rms_mm_s": vel_rms_mm_s, "vel_band_hz": [float(vel_band_hz[0]), float(vel_band_hz[1])],
        "iso_zone": iso_zone, "iso_group": iso_group, "iso_foundation": iso_foundation,
        "env_db": dict(env_db), "rpm": rpm, "rpm_source": rpm_source, "anomaly_ratio": anomaly_ratio,
    }
    validate_indicators(doc)
    return doc


def validate_indicators(doc: Any) -> dict[str, Any]:
    """Check an indicators dict against ``edgevib.indicators/1``; return it or raise ProtocolError."""
    _object(doc, "indicators", INDICATORS_SCHEMA)
    _names(doc, ("site", "gateway", "sensor"))
    _str(doc, "asset", optional=True)
    _num(doc, "t_ns", -(2**63), 2**63 - 1, integer=True)
    _num(doc, "duration_s", 0.0, 3600.0)
    _num(doc, "sample_rate", 1e-6, 1e7)  # > 0
    for k in ("acc_rms_g", "acc_peak_g", "crest", "kurtosis", "vel_rms_mm_s"):
        _num(doc, k, 0.0)
    band = doc.get("vel_band_hz")
    if (not isinstance(band, list) or len(band) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) for b in band)
            or not 0 <= band[0] < band[1]):
        raise ProtocolError("bad_field", f"vel_band_hz={str(band)[:60]!r}", "use [low_hz, high_hz], 0 <= low < high")
    _str(doc, "iso_zone", ISO_ZONES)
    _num(doc, "iso_group", 1, 2, integer=True)
    _str(doc, "iso_foundation", ISO_FOUNDATIONS)
    env = doc.get("env_db")
    if not isinstance(env, dict):
        raise ProtocolError("bad_field" if "env_db" in doc else "missing_field", "env_db is not an object",
                            "use {" + ", ".join(f'"{k}": dB' for k in ENVELOPE_LINES) + "}")
    for k in ENVELOPE_LINES:  # more lines may come (numbers); these must be there
        if k not in env:
            raise ProtocolError("missing_field", f"field 'env_db.{k}' missing", f"set env_db.{k}")
    for k in env:
        try:
            _num(env, k, 0.0)
        except ProtocolError as exc:
            raise ProtocolError(exc.reason, f"env_db.{exc.problem}", exc.fix) from None
    _num(doc, "rpm", 1e-6, 1e6)  # > 0
    _str(doc, "rpm_source", SPEED_SOURCES)
    _num(doc, "anomaly_ratio", 0.0, optional=True)
    return doc


def parse_indicators(payload: bytes) -> dict[str, Any]:
    """Bytes from the ``indicators`` topic -> validated indicators dict."""
    return validate_indicators(_load(payload, "indicators"))
