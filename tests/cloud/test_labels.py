"""Labels: the edgevib.label/1 event, label_alert (alert row or evidence only), label_evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgevib.cloud.errors import CloudError
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.learning.labels import label_alert, label_evidence
from edgevib.cloud.store import Store

from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.evidence import encode
from edgevib.protocol.labels import LABEL_SCHEMA, make_label, parse_label
from tests.cloud.test_dataset import Clock, T, rec


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Store, EvidenceStore, Clock]:
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path}/s.db", clock=clock)
    return store, EvidenceStore(store, tmp_path / "ds", clock=clock), clock


def _alert_row(store: Store, aid: str, model: str = "cnn_small") -> None:
    store.upsert("alerts", [{"id": aid, "site": "plant", "gateway": "gw", "sensor": "de", "akind": "fault",
                             "state": "raised", "cls": "IR007", "model_name": model}])


def test_label_event_round_trip_and_refusals() -> None:
    doc = make_label(alert_id="a1", site="plant", gateway="gw", cls="OR021@3", n_windows=5, labelled_by="ops",
                     t_ns=1, model_name="cnn_small")
    assert doc["schema"] == LABEL_SCHEMA and parse_label(json.dumps(doc).encode()) == doc
    for bad, reason in [({"class": "XX"}, "bad_field"), ({"site": "a/b"}, "bad_name"), ({"schema": "x"}, "bad_schema"),
                        ({"n_windows": -1}, "bad_field"), ({"t_ns": True}, "bad_field")]:
        with pytest.raises(ProtocolError) as ei:
            parse_label(json.dumps({**doc, **bad}).encode())
        assert ei.value.reason == reason
    with pytest.raises(ProtocolError) as ei:
        parse_label(b"{nope")
    assert ei.value.reason == "bad_json"
    no_model = {k: v for k, v in doc.items() if k != "model_name"}
    with pytest.raises(ProtocolError, match="model_name"):
        parse_label(json.dumps(no_model).encode())


def test_label_alert_labels_its_evidence_writes_the_row_and_publishes(stores: tuple[Store, EvidenceStore, Clock]) -> None:
    store, es, clock = stores
    _alert_row(store, "a1", model="from-alert-row")
    for i in range(3):
        es.put(encode(rec(i, "alert", "a1")), T.evidence)
    es.put(encode(rec(9, "alert", "other")), T.evidence)
    sent: list[tuple[str, bytes]] = []
    doc = label_alert(store, es, "a1", "IR014", by="ops", publish=lambda t, p: sent.append((t, p)))
    assert (doc["class"], doc["n_windows"], doc["labelled_by"], doc["site"], doc["gateway"]) == ("IR014", 3, "ops", "plant", "gw")
    assert doc["model_name"] == "cnn_small", "the model that produced the evidence"
    assert sent == [("edgevib/v1/plant/gw/labels", sent[0][1])] and parse_label(sent[0][1]) == doc
    assert store.query("SELECT alert_id, cls, labelled_by, n_windows, labelled_ms FROM labels") == [
        ("a1", "IR014", "ops", 3, int(clock.t * 1000))]
    x, labels, rows = es.labelled_windows()
    assert labels == ["IR014"] * 3 and {r["alert_id"] for r in rows} == {"a1"}
    np.testing.assert_array_equal(x[2], rec(2).window)
    # evidence for a1 arriving after the label inherits it; a relabel replaces it everywhere
    es.put(encode(rec(3, "alert", "a1")), T.evidence)
    assert es.labelled_windows()[1] == ["IR014"] * 4
    assert label_alert(store, es, "a1", "normal")["n_windows"] == 4
    assert set(es.labelled_windows()[1]) == {"normal"}
    assert store.query("SELECT cls FROM labels") == [("normal",)]


def test_label_alert_from_evidence_alone_and_clear_errors(stores: tuple[Store, EvidenceStore, Clock]) -> None:
    store, es, _ = stores
    es.put(encode(rec(1, "alert", "early")), T.evidence)
    doc = label_alert(store, es, "early", "B007")
    assert (doc["site"], doc["gateway"], doc["n_windows"]) == ("plant", "gw", 1)
    _alert_row(store, "bare")
    assert label_alert(store, es, "bare", "OR007")["n_windows"] == 0, "an alert without evidence can be labelled"
    with pytest.raises(CloudError, match="unknown alert 'missing'.*fix: use an id"):
        label_alert(store, es, "missing", "IR007")
    with pytest.raises(CloudError, match="class 'IR7'.*fix: use 'normal'"):
        label_alert(store, es, "bare", "IR7")
    with pytest.raises(CloudError, match="class 'IR999'"):  # the pattern fits, but no such fault size
        label_alert(store, es, "bare", "IR999")
    assert store.query("SELECT COUNT(*) FROM labels") == [(2,)]


def test_label_evidence_directly(stores: tuple[Store, EvidenceStore, Clock]) -> None:
    store, es, _ = stores
    ids = [es.put(encode(rec(i, "healthy_sample")), T.evidence) for i in range(3)]
    assert label_evidence(es, [i for i in ids[:2] if i], "normal") == 2
    assert es.labelled_windows()[1] == ["normal", "normal"]
    with pytest.raises(CloudError, match="unknown evidence"):
        label_evidence(es, ["nope"], "normal")
    with pytest.raises(CloudError, match="class"):
        label_evidence(es, [ids[2] or ""], "broken")
