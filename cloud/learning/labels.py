"""Operators' labels: labelling an alert's evidence and sending the ``edgevib.label/1`` event.

The event's schema is :mod:`edgevib.protocol.labels`. :func:`label_alert` writes the ``labels`` row, sets ``label``/``labelled_ms`` on the
alert's evidence windows (windows arriving later inherit it, see
:mod:`edgevib.cloud.learning.dataset`) and, given ``publish``, sends the event on
``edgevib/v1/<site>/<gateway>/labels`` (QoS 1 is the caller's publish).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from edgevib.cloud.errors import CloudError
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store

from edgevib.protocol import Topics, dumps
from edgevib.protocol.labels import CLASS_FIX, is_known_class, make_label

# Re-exported names of the label event live in edgevib.protocol.labels.
__all__ = ["check_class", "label_alert", "label_evidence"]


def check_class(cls: object) -> str:
    """``cls`` if it is a known class name (``normal``, ``IR007``, ``OR021@3``, a bare ``IR``), else CloudError."""
    if is_known_class(cls):
        return str(cls)
    raise CloudError("cloud.labels", f"class {str(cls)[:40]!r}", CLASS_FIX)


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
