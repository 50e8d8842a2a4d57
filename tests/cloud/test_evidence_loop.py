"""Evidence end to end on a real Mosquitto: a real CWRU inner-race replay raises an alert, the agent
uploads the windows behind it, the collector stores them with provenance, ``label_alert`` labels
them (and publishes the label), and ``labelled_windows`` returns exactly those windows.

No Flink: the collector and the label path are plain Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.collector import Collector
from edgevib.cloud.learning.labels import label_alert
from edgevib.edge.agent import Agent
from edgevib.edge.cli import model_path
from edgevib.edge.config import load_agent_config
from edgevib.edge.mqtt import MqttLink
from edgevib.edge.outbox import Outbox
from edgevib.edge.runtime import OnnxModel
from edgevib.edge.stream import stream_recording
from edgevib.models.data import load_recording

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.labels import parse_label

pytestmark = [pytest.mark.integration, pytest.mark.data]
T = proto.Topics("plant", "gw")
K = 2  # of the 3 windows the alert needed (k=3 of n=5): only the newest K go out


def _until(cond: Callable[[], bool], timeout: float, what: str, tick: Callable[[], object] = lambda: None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tick()
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_real_fault_replay_evidence_is_stored_labelled_and_returned(
        broker: MosquittoProcess, cwru_dir: Path, tmp_path: Path) -> None:
    cloud_cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "store_url": f"sqlite:///{tmp_path}/store.db",
        "evidence": {"dataset_dir": str(tmp_path / "dataset")}})
    collector = Collector(cloud_cfg, client_id="test-collector")
    collector.start()
    cfg = load_agent_config(None, env={}, broker_url=broker.url, site="plant", gateway="gw", heartbeat_s=3600,
                            alert={"anomaly": False}, outbox={"path": str(tmp_path / "ob.sqlite")},
                            # only alert evidence, so "the windows behind the alert" is the whole dataset
                            evidence={"enabled": True, "alert_windows": K, "low_confidence": 0.0,
                                      "healthy_every": 10**9})
    link = MqttLink(broker.url, "agent", reconnect=(1, 1), connect=False)
    # the 10-class CNN, pinned: this test is about the evidence plumbing (2048-sample model
    # inputs labelled IR007), not about which model ships as the default
    model = OnnxModel(Path(model_path("")).parent / "cnn_small.onnx")
    agent = Agent(cfg, model, link, Outbox(cfg.outbox.path))
    watch = MqttLink(broker.url, "watch", reconnect=(1, 1), connect=False)
    watch.subscribe(T.alerts)
    watch.subscribe(T.labels)
    tx = MqttLink(broker.url, "tx", reconnect=(1, 1))
    for lk in (link, watch):
        lk.start()
    try:
        assert link.wait_connected(5) and watch.wait_connected(5) and tx.wait_connected(5)
        rec = load_recording(cwru_dir / "IR007_load0_12k_DE_105.npz")
        signal = rec.signal[: 12000 * 2]
        t0 = 1_700_000_000 * 10**9
        stream_recording(tx, T, "de", type(rec)(signal, rec.fs, rec.rpm, rec.label, rec.size_in),
                         frame=4096, t0_ns=t0)
        alerts: list[dict[str, object]] = []

        def pump() -> None:
            agent.step()
            while (m := watch.poll(0)) is not None:
                if m.topic == T.alerts:
                    alerts.append(proto.parse_alert(m.payload))

        try:
            _until(lambda: any(a["state"] == "raised" for a in alerts) and collector.dataset.stored >= K, 60,
                   "a raised alert and its evidence in the dataset", pump)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: alerts {[(a['state'], a['class']) for a in alerts]}, collector received "
                                 f"{collector.received} stored {collector.dataset.stored} rejected "
                                 f"{dict(collector.dataset.rejected)}, agent {dict(agent.metrics.counters)}, "
                                 f"outbox {len(agent.outbox)}") from None
        (alert,) = [a for a in alerts if a["state"] == "raised"]
        assert alert["class"] == "IR007", alert
        aid = str(alert["id"])

        rows = collector.dataset.for_alert(aid)
        assert len(rows) == K and collector.dataset.rejected == {}
        for r in rows:
            assert (r["site"], r["gateway"], r["sensor"], r["reason"], r["alert_id"]) == ("plant", "gw", "de", "alert", aid)
            assert (r["model_name"], r["model_version"], r["model_sha256"]) == (model.name, model.version, model.sha256)
            assert r["sample_rate"] == 12000 and r["rpm"] == pytest.approx(1797.0) and r["label"] is None
        assert rows[-1]["t_ms"] == int(alert["t_ns"]) // 1_000_000, "the window that raised it is the newest"  # type: ignore[call-overload]
        # each stored window is the model's input: a 2048-sample stretch of the replayed recording,
        # ending where its row says (12 kHz recording = model rate, so no resampling)
        for r in rows:
            x = collector.dataset.load(r)
            end = round((r["t_ms"] * 10**6 - t0) * 12000 / 1e9)
            starts = [s for s in range(max(0, end - 2048 - 16), end - 2048 + 17)
                      if np.allclose(signal[s:s + 2048], x, atol=1e-6)]
            assert len(starts) == 1, f"window {r['id']} is not a slice of the recording near sample {end}"

        published: list[tuple[str, bytes]] = []

        def publish(topic: str, payload: bytes) -> None:
            published.append((topic, payload))
            tx.publish(topic, payload, qos=1)

        doc = label_alert(collector.store, collector.dataset, aid, "IR007", by="test", publish=publish)
        assert doc["n_windows"] == K and doc["model_name"] == model.name
        got: list[dict[str, object]] = []
        _until(lambda: bool(got), 10, "the label event on the labels topic",
               lambda: [got.append(parse_label(m.payload)) for m in iter(lambda: watch.poll(0), None)
                        if m.topic == T.labels])
        assert got == [doc] and published[0][0] == T.labels

        x, labels, lrows = collector.dataset.labelled_windows(model_name=model.name)
        assert labels == ["IR007"] * K and sorted(r["id"] for r in lrows) == sorted(r["id"] for r in rows)
        np.testing.assert_array_equal(x, collector.dataset.windows([r["id"] for r in lrows]))
        assert x.shape == (K, 2048) and x.dtype == np.float32
        assert agent.metrics.counters["evidence_sent"] == K
    finally:
        collector.stop()
        for lk in (link, watch, tx):
            lk.close()
