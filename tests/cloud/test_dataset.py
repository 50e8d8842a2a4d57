"""EvidenceStore: provenance, idempotent replays, quota eviction order, per-gateway rate, bad input counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.cloud.errors import CloudError
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store

from edgevib.protocol import Topics
from edgevib.protocol.evidence import EvidenceRecord, encode

T = Topics("plant", "gw")
W = 256
NBYTES = 128 + 4 * W  # one .npy window file
MODEL = {"name": "cnn_small", "version": "2", "sha256": "cd" * 32}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def rec(i: int, reason: str = "healthy_sample", alert_id: str | None = None, sensor: str = "de",
        site: str = "plant", gateway: str = "gw", n: int = W) -> EvidenceRecord:
    x = np.random.default_rng(i).normal(0, 0.1, n).astype(np.float32)
    top = "normal" if reason == "healthy_sample" else "IR007"
    return EvidenceRecord.build(site=site, gateway=gateway, sensor=sensor, t_ns=1_700_000_000_000_000_000 + i * 10**8,
                                rpm=1772.0, sample_rate=12000.0, reason=reason, alert_id=alert_id,
                                probs={top: 0.9, "B007" if top == "normal" else "normal": 0.1}, model=MODEL, window=x)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _es(tmp_path: Path, clock: Clock, **kw: float) -> EvidenceStore:
    return EvidenceStore(Store(f"sqlite:///{tmp_path}/s.db", clock=clock), tmp_path / "ds", clock=clock,
                         **{"max_bytes": 10**9, "max_per_gateway_per_min": 10**6, **kw})  # type: ignore[arg-type]


def test_put_stores_window_file_and_provenance_row(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock)
    r = rec(1, "alert", "al-1")
    assert es.put(encode(r), T.evidence) == r.id
    (row,) = es.for_alert("al-1")
    assert {k: row[k] for k in ("site", "gateway", "sensor", "t_ms", "rpm", "sample_rate", "reason", "alert_id",
                                "pred_cls", "model_name", "model_version", "model_sha256", "label", "stored_ms")} == {
        "site": "plant", "gateway": "gw", "sensor": "de", "t_ms": 1_700_000_000_100, "rpm": 1772.0,
        "sample_rate": 12000, "reason": "alert", "alert_id": "al-1", "pred_cls": "IR007", "model_name": "cnn_small",
        "model_version": "2", "model_sha256": "cd" * 32, "label": None, "stored_ms": 1_700_000_000_000}
    assert row["probability"] == pytest.approx(0.9)
    f = tmp_path / "ds" / row["path"]
    assert f.stat().st_size == row["nbytes"] == NBYTES
    np.testing.assert_array_equal(es.load(row), r.window)
    np.testing.assert_array_equal(es.windows([r.id]), r.window[None, :])
    assert [x["id"] for x in es.recent("plant", "gw", "de", 5)] == [r.id]
    assert not list((tmp_path / "ds").rglob(".*.tmp")), "no temp file left behind"


def test_replay_is_idempotent_and_an_alert_claim_survives_a_later_other_reason(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock)
    es.put(encode(rec(1, "alert", "al-1")), T.evidence)
    clock.t += 5
    es.put(encode(rec(1, "alert", "al-1")), T.evidence)
    es.put(encode(rec(1, "low_confidence")), T.evidence)  # same window, same id
    rows = es.store.query("SELECT reason, alert_id, stored_ms FROM evidence")
    assert rows == [("alert", "al-1", 1_700_000_000_000)]


def test_bad_input_is_counted_per_reason_and_never_raises(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock)
    good = encode(rec(1))
    cases = {
        "bad_topic": (good, "edgevib/v1/plant/gw/alerts"),
        "topic_mismatch": (good, Topics("plant", "other").evidence),
        "bad_crc": (good[:-1] + bytes([good[-1] ^ 0xFF]), T.evidence),
        "truncated": (good[:30], T.evidence),
        "bad_magic": (b"hello world, not evidence", T.evidence),
    }
    for payload, topic in cases.values():
        assert es.put(payload, topic) is None
    assert es.put(b"", "not/a/topic") is None
    assert dict(es.rejected) == {"bad_topic": 2, "topic_mismatch": 1, "bad_crc": 1, "truncated": 1, "bad_magic": 1}
    assert es.store.query("SELECT COUNT(*) FROM evidence") == [(0,)] and es.stored == 0


def test_rate_limit_per_gateway(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock, max_per_gateway_per_min=3)
    other = Topics("plant", "gw2")
    got = [es.put(encode(rec(i)), T.evidence) for i in range(5)]
    assert sum(g is not None for g in got) == 3 and es.rejected["rate_limited"] == 2
    assert es.put(encode(rec(9, gateway="gw2")), other.evidence) is not None, "gateways have separate budgets"
    clock.t += 20  # 3/min: one token per 20 s
    assert es.put(encode(rec(10)), T.evidence) is not None
    assert es.put(encode(rec(11)), T.evidence) is None


def test_quota_evicts_unlabelled_healthy_first_then_others_never_labelled(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock, max_bytes=4 * NBYTES)
    ids = []
    for i, (reason, aid) in enumerate([("alert", "a1"), ("healthy_sample", None), ("low_confidence", None),
                                       ("healthy_sample", None)]):
        clock.t += 1
        ids.append(es.put(encode(rec(i, reason, aid)), T.evidence))
    es.set_label("id = ?", (ids[0],), "IR007", 1)
    alive = lambda: {r[0] for r in es.store.query("SELECT id FROM evidence")}  # noqa: E731
    clock.t += 1
    new1 = es.put(encode(rec(10, "low_confidence")), T.evidence)
    assert alive() == {ids[0], ids[2], ids[3], new1}, "the oldest healthy sample went first"
    clock.t += 1
    new2 = es.put(encode(rec(11, "healthy_sample")), T.evidence)
    assert alive() == {ids[0], ids[2], new1, new2}, "then the next healthy one"
    clock.t += 1
    new3 = es.put(encode(rec(12, "alert", "a2")), T.evidence)
    assert alive() == {ids[0], ids[2], new1, new3}, "the last healthy one, before any other"
    clock.t += 1
    assert es.put(encode(rec(13, "healthy_sample")), T.evidence) is None, "healthy never evicts other reasons"
    assert es.rejected["quota"] == 1
    new4 = es.put(encode(rec(14, "alert", "a3")), T.evidence)
    assert alive() == {ids[0], new1, new3, new4}, "then the oldest unlabelled other; the labelled one stays"
    assert es.evicted == 4
    files = {p.stem for p in (tmp_path / "ds").rglob("*.npy")}
    assert files == alive(), "evicted windows' files are deleted"
    assert int(es.store.query("SELECT SUM(nbytes) FROM evidence")[0][0]) <= 4 * NBYTES
    summ = es.summary()
    assert (summ["evicted"], summ["rejected"], summ["stored"]) == (4, {"quota": 1}, 8)
    assert summ["by_reason"] == {"alert": {"rows": 3, "bytes": 3 * NBYTES, "labelled": 1},
                                 "low_confidence": {"rows": 1, "bytes": NBYTES, "labelled": 0}}


def test_labelled_windows_filters_and_stacks(tmp_path: Path, clock: Clock) -> None:
    es = _es(tmp_path, clock)
    rs = [rec(i, "alert", "a1") for i in range(3)] + [rec(5, "low_confidence")]
    for r in rs:
        es.put(encode(r), T.evidence)
    x, labels, rows = es.labelled_windows()
    assert x.shape == (0, 0) and labels == [] and rows == []
    assert es.set_label("alert_id = ?", ("a1",), "IR014", 1000) == 3
    es.set_label("id = ?", (rs[3].id,), "normal", 2000)
    x, labels, rows = es.labelled_windows()
    assert x.shape == (4, W) and x.dtype == np.float32 and labels == ["IR014"] * 3 + ["normal"]
    np.testing.assert_array_equal(x[0], rs[0].window)
    x, labels, _ = es.labelled_windows(since_ms=1500)
    assert labels == ["normal"] and np.array_equal(x[0], rs[3].window)
    assert es.labelled_windows(model_name="other")[1] == []
    es.put(encode(rec(20, "alert", "a9", n=128)), T.evidence)
    es.set_label("alert_id = ?", ("a9",), "B007", 3000)
    with pytest.raises(CloudError, match="model_name"):
        es.labelled_windows()
    with pytest.raises(CloudError, match="unknown evidence"):
        es.windows(["nope"])


def test_bearing_is_stored_and_returned_and_an_older_store_gains_the_columns(tmp_path: Path, clock: Clock) -> None:
    import sqlite3

    from edgevib.cloud.learning.dataset import row_geometry
    from edgevib.models.bearing import BearingGeometry

    # a store written before the bearing columns existed
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute("CREATE TABLE evidence (id TEXT, site TEXT, gateway TEXT, sensor TEXT, t_ms BIGINT, rpm DOUBLE "
                "PRECISION, sample_rate BIGINT, reason TEXT, alert_id TEXT, pred_cls TEXT, probability DOUBLE "
                "PRECISION, model_name TEXT, model_version TEXT, model_sha256 TEXT, label TEXT, labelled_ms BIGINT, "
                "path TEXT, nbytes BIGINT, stored_ms BIGINT, PRIMARY KEY (id))")
    con.commit()
    con.close()
    es = _es(tmp_path, clock)
    geo = BearingGeometry(12, 7.5, 46.0, 15.0)
    old, new = rec(1, "alert", "a1"), rec(2, "alert", "a1")
    new = EvidenceRecord.build(site=new.site, gateway=new.gateway, sensor=new.sensor, t_ns=new.t_ns, rpm=new.rpm,
                               sample_rate=new.sample_rate, reason="alert", alert_id="a1", probs=new.probs,
                               model=new.model, window=new.window, bearing=geo)
    assert es.put(encode(old), T.evidence) == old.id and es.put(encode(new), T.evidence) == new.id
    es.set_label("alert_id = ?", ("a1",), "OR007", 1000)
    _, _, rows = es.labelled_windows()
    by_id = {r["id"]: r for r in rows}
    assert row_geometry(by_id[old.id]) is None  # an agent that did not send its bearing
    assert by_id[new.id]["n_balls"] == 12 and by_id[new.id]["contact_angle_deg"] == 15.0
    assert row_geometry(by_id[new.id]) == BearingGeometry(12, 7.5, 46.0, 15.0)
