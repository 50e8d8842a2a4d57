"""Operators' labels: the ``edgevib.label/1`` event and labelling an alert's evidence.

:func:`label_alert` writes the ``labels`` row, sets ``label``/``labelled_ms`` on the
alert's evidence windows (windows arriving later inherit it, see
:mod:`edgevib.cloud.dataset`) and, given ``publish``, sends the event on
``edgevib/v1/<site>/<gateway>/labels`` (QoS 1 is the caller's publish)::

    {"schema": "edgevib.label/1", "alert_id": "...", "site": "plant", "gateway": "gw",
     "class": "IR007", "n_windows": 5, "labelled_by": "cli", "t_ns": 1700000000000000000,
     "model_name": "cnn_small"}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from edgevib.cloud.dataset import EvidenceStore
from edgevib.cloud.errors import CloudError
from edgevib.cloud.store import Store
from edgevib.edge.errors import ProtocolError
from edgevib.edge.protocol import MAX_MESSAGE_BYTES, Topics, check_name, dumps
from edgevib.models.classes import CLASSES_10, FAULT_TYPES, class_name

LABEL_SCHEMA = "edgevib.label/1"
_FIX_CLASS = f"use 'normal' or a class name such as {', '.join(CLASSES_10[1:4])}, IR021, OR014@3"


# Every class a CWRU-style model can have: the ten standard ones, bare fault types, all
# fault sizes (0.028 in included) and outer-race positions.
KNOWN_CLASSES: frozenset[str] = frozenset(
    {*CLASSES_10, *FAULT_TYPES} | {class_name(t, s, p) for t in ("B", "IR", "OR") for s in (0.007, 0.014, 0.021, 0.028)
                                   for p in (("", "@3", "@12") if t == "OR" else ("",))})


def check_class(cls: object) -> str:
    """``cls`` if it is a known class name (``normal``, ``IR007``, ``OR021@3``, a bare ``IR``), else CloudError."""
    if isinstance(cls, str) and cls in KNOWN_CLASSES:
        return cls
    raise CloudError("cloud.labels", f"class {str(cls)[:40]!r}", _FIX_CLASS)


def make_label(*, alert_id: str, site: str, gateway: str, cls: str, n_windows: int, labelled_by: str,
               t_ns: int, model_name: str | None) -> dict[str, Any]:
    """A validated label event (raises ProtocolError on a bad field)."""
    doc = {"schema": LABEL_SCHEMA, "alert_id": alert_id, "site": site, "gateway": gateway, "class": cls,
           "n_windows": n_windows, "labelled_by": labelled_by, "t_ns": t_ns, "model_name": model_name}
    return validate_label(doc)


def validate_label(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError("bad_json", f"label is a {type(doc).__name__}", "send a JSON object")
    if doc.get("schema") != LABEL_SCHEMA:
        raise ProtocolError("bad_schema", f"schema={str(doc.get('schema'))[:40]!r}", f"use {LABEL_SCHEMA!r}")
    for k in ("alert_id", "site", "gateway", "class", "n_windows", "labelled_by", "t_ns", "model_name"):
        if k not in doc:
            raise ProtocolError("missing_field", f"field {k!r} missing", f"set {k}")
    check_name(doc["site"], "site")
    check_name(doc["gateway"], "gateway")
    for k in ("alert_id", "labelled_by"):
        if not isinstance(doc[k], str) or not 0 < len(doc[k]) <= 128:
            raise ProtocolError("bad_field", f"{k}={str(doc[k])[:40]!r}", "use a string of 1-128 characters")
    if doc["model_name"] is not None and (not isinstance(doc["model_name"], str) or len(doc["model_name"]) > 256):
        raise ProtocolError("bad_field", f"model_name={str(doc['model_name'])[:40]!r}", "use a string or null")
    try:
        check_class(doc["class"])
    except CloudError as exc:
        raise ProtocolError("bad_field", exc.problem, exc.fix) from exc
    for k, hi in (("n_windows", 10**9), ("t_ns", 2**63 - 1)):
        v = doc[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise ProtocolError("bad_field", f"{k}={str(v)[:40]!r}", f"use an integer in [0, {hi}]")
    return doc


def parse_label(payload: bytes) -> dict[str, Any]:
    """Bytes from a ``labels`` topic -> validated label event (ProtocolError with a reason otherwise)."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized" if isinstance(payload, (bytes, bytearray)) else "bad_json",
                            "label payload", f"send JSON bytes under {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"label is not JSON ({str(exc)[:60]})", "send UTF-8 JSON") from exc
    return validate_label(doc)


def label_alert(store: Store, evidence_store: EvidenceStore | None, alert_id: str, cls: str, *, by: str = "cli",
                publish: Callable[[str, bytes], None] | None = None,
                clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Label alert ``alert_id`` as ``cls``: labels row, its evidence windows, the label event."""
    cls = check_class(cls)
    found = store.query("SELECT site, gateway, model_name FROM alerts WHERE id = ?", (alert_id,))
    ev = evidence_store.for_alert(alert_id) if evidence_store is not None else []
    if found:
        site, gateway, model_name = found[0]
    elif ev:
        site, gateway, model_name = ev[0]["site"], ev[0]["gateway"], ev[0]["model_name"]
    else:
        raise CloudError("cloud.labels", f"unknown alert {alert_id!r} (no alert row, no evidence)",
                         "use an id from `edgevib alerts` or the dashboard; a just-raised alert may need a few seconds")
    if ev:  # the model that produced the evidence is the one a retrain starts from
        model_name = ev[-1]["model_name"]
    now_ms = int((clock or store.clock)() * 1000)
    n = evidence_store.set_label("alert_id = ?", (alert_id,), cls, now_ms) if evidence_store is not None else 0
    doc = make_label(alert_id=alert_id, site=site, gateway=gateway, cls=cls, n_windows=n, labelled_by=by,
                     t_ns=now_ms * 1_000_000, model_name=model_name)
    store.upsert("labels", [{"alert_id": alert_id, "site": site, "gateway": gateway, "cls": cls,
                             "labelled_by": by, "labelled_ms": now_ms, "n_windows": n}])
    if publish is not None:
        publish(Topics(site, gateway).labels, dumps(doc))
    return doc


def label_evidence(evidence_store: EvidenceStore, ids: Iterable[str], cls: str, *,
                   clock: Callable[[], float] | None = None) -> int:
    """Label evidence windows directly (e.g. healthy samples); how many were labelled."""
    cls, ids = check_class(cls), list(ids)
    evidence_store.windows(ids)  # CloudError naming unknown ids, before anything changes
    if not ids:
        return 0
    return evidence_store.set_label(f"id IN ({', '.join('?' * len(ids))})", tuple(ids), cls,
                                  int((clock or evidence_store.clock)() * 1000))
