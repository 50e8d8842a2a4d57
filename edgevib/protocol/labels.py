"""Operators' labels on the wire: the ``edgevib.label/1`` event on ``.../<site>/<gateway>/labels``.

The cloud sends one when an operator labels an alert (:mod:`edgevib.cloud.learning.labels`)::

    {"schema": "edgevib.label/1", "alert_id": "...", "site": "plant", "gateway": "gw",
     "class": "IR007", "n_windows": 5, "labelled_by": "cli", "t_ns": 1700000000000000000,
     "model_name": "cnn_small"}

>>> import json
>>> doc = make_label(alert_id="a1", site="plant", gateway="gw", cls="OR021@3", n_windows=5,
...                  labelled_by="ops", t_ns=0, model_name=None)
>>> parse_label(json.dumps(doc).encode())["class"]
'OR021@3'
>>> is_known_class("IR"), is_known_class("XX007")
(True, False)
"""

from __future__ import annotations

import json
from typing import Any

from edgevib.models.classes import CLASSES_10, FAULT_TYPES, class_name
from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.messages import MAX_MESSAGE_BYTES
from edgevib.protocol.topics import check_name

__all__ = ["CLASS_FIX", "KNOWN_CLASSES", "LABEL_SCHEMA", "is_known_class", "make_label", "parse_label",
           "validate_label"]

LABEL_SCHEMA = "edgevib.label/1"
CLASS_FIX = f"use 'normal' or a class name such as {', '.join(CLASSES_10[1:4])}, IR021, OR014@3"


# Every class a CWRU-style model can have: the ten standard ones, bare fault types, all
# fault sizes (0.028 in included) and outer-race positions.
KNOWN_CLASSES: frozenset[str] = frozenset(
    {*CLASSES_10, *FAULT_TYPES} | {class_name(t, s, p) for t in ("B", "IR", "OR") for s in (0.007, 0.014, 0.021, 0.028)
                                   for p in (("", "@3", "@12") if t == "OR" else ("",))})


def is_known_class(cls: object) -> bool:
    """True if ``cls`` is a known class name (``normal``, ``IR007``, ``OR021@3``, a bare ``IR``)."""
    return isinstance(cls, str) and cls in KNOWN_CLASSES


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
    if not is_known_class(doc["class"]):
        raise ProtocolError("bad_field", f"class {str(doc['class'])[:40]!r}", CLASS_FIX)
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
