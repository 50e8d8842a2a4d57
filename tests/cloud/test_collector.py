"""The evidence collector on a real Mosquitto: persistent session, garbage counted, store failures retried."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgevib.cloud.config import CloudConfig, load_config
from edgevib.cloud.ingest.collector import Collector
from edgevib.edge.mqtt import MqttLink

from edgevib.broker import MosquittoProcess
from edgevib.protocol.evidence import encode
from tests.cloud.test_dataset import T, rec

pytestmark = pytest.mark.integration


def _cfg(broker: MosquittoProcess, tmp_path: Path) -> CloudConfig:
    return load_config(None, env={}, overrides={"broker_url": broker.url, "store_url": f"sqlite:///{tmp_path}/s.db",
                                                "evidence": {"dataset_dir": str(tmp_path / "ds")}})


def test_evidence_sent_while_the_collector_is_down_is_stored_after_it_returns(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    cfg = _cfg(broker, tmp_path)
    first = Collector(cfg, client_id="col")
    first.start()
    first.stop()  # the session (subscription + queue) stays at the broker
    tx = MqttLink(broker.url, "tx", reconnect=(1, 1))
    try:
        assert tx.wait_connected(5)
        for i in range(3):
            assert tx.publish(T.evidence, encode(rec(i)), qos=1) is not None
        tx.publish(T.evidence, b"not evidence", qos=1)
        tx.publish("edgevib/v1/plant/gw/evidence", encode(rec(7, gateway="elsewhere")), qos=1)
        with Collector(cfg, client_id="col") as again:
            assert again.wait_stored(3, 15), f"stored {again.dataset.stored}, rejected {again.dataset.rejected}"
            assert not again.wait_stored(4, 0.5)
            assert dict(again.dataset.rejected) == {"bad_magic": 1, "topic_mismatch": 1}
            assert {r["id"] for r in again.dataset.recent("plant", "gw", "de", 10)} == {rec(i).id for i in range(3)}
    finally:
        tx.close()


def test_a_failing_store_is_retried_not_acked_away(broker: MosquittoProcess, tmp_path: Path) -> None:
    with Collector(_cfg(broker, tmp_path), client_id="col2") as col:
        real, calls = col.dataset.put, []

        def flaky(payload: bytes, topic: str) -> str | None:
            calls.append(topic)
            if len(calls) < 3:
                raise OSError("disk full (simulated)")
            return real(payload, topic)

        col.dataset.put = flaky  # type: ignore[method-assign]
        tx = MqttLink(broker.url, "tx2", reconnect=(1, 1))
        try:
            assert tx.wait_connected(5)
            tx.publish(T.evidence, encode(rec(1)), qos=1)
            assert col.wait_stored(1, 15)
        finally:
            tx.close()
        assert len(calls) == 3 and col.dataset.stored == 1
