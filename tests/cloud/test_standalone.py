"""Submit the job to a locally started standalone Flink cluster with ``flink run -py``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from edgevib.cloud.config import load_config, to_toml

from edgevib.broker import MosquittoProcess

pytestmark = pytest.mark.integration


def test_job_runs_on_a_standalone_cluster(flink_prereqs: None, broker: MosquittoProcess, tmp_path: Path) -> None:
    from edgevib.cloud.flink.standalone import StandaloneCluster
    from edgevib.cloud.ingest.bridge import Bridge
    from edgevib.cloud.store import Store
    from edgevib.cloud.testing import GatewaySim

    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "store_url": f"sqlite:///{tmp_path}/store.db", "spool_dir": str(tmp_path / "spool"),
        "checkpoint_dir": str(tmp_path / "ckpt"), "bridge": {"client_id": "bridge-standalone"},
        "job": {"window_s": 1, "out_of_orderness_s": 0.5}})
    config = tmp_path / "cloud.toml"
    config.write_text(to_toml(cfg))
    cluster = StandaloneCluster(tmp_path / "flink")
    bridge = Bridge(cfg)
    sim = GatewaySim(broker.url, "s1", "g1")
    job_id = ""
    try:
        cluster.start()
        bridge.start()
        job_id = cluster.submit(config)
        store = Store(cfg.store_url)
        sent = []
        deadline = time.time() + 150
        while time.time() < deadline:
            sent.append(sim.alert("IR014")["id"])
            sim.heartbeat()
            n = store.query("SELECT COUNT(*) FROM alerts")[0][0]
            if n > 0 and store.gateways() and store.asset_counts():
                break
            time.sleep(0.5)
        assert cluster.job_state(job_id) == "RUNNING"
        stored = {r[0] for r in store.query("SELECT id FROM alerts")}
        assert stored and stored <= set(sent)
        assert store.gateways()["s1/g1"]["status"] == "online"
        assert sum(store.asset_counts().values()) >= 1
        store.close()
    finally:
        if job_id:
            cluster.cancel(job_id)
        cluster.stop()
        bridge.stop()
        sim.close()
