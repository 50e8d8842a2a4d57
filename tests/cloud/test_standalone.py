"""The job on a locally started standalone Flink cluster (two TaskManagers): ``flink run -py``,
and rescaling 1 -> 2 -> 1 from savepoints with nothing lost and nothing counted twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgevib.cloud.config import load_config, to_toml

from edgevib.broker import MosquittoProcess
from edgevib.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(flink_prereqs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from edgevib.cloud.flink.standalone import StandaloneCluster

    c = StandaloneCluster(tmp_path_factory.mktemp("flink"), taskmanagers=2)
    c.start()
    try:
        assert int(str(c.overview()["taskmanagers"])) == 2
        yield c
    finally:
        c.stop()


def test_job_runs_on_a_standalone_cluster(cluster: Any, broker: MosquittoProcess, tmp_path: Path) -> None:
    from edgevib.cloud.ingest.bridge import Bridge
    from edgevib.cloud.store import Store
    from edgevib.cloud.testing import GatewaySim

    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "store_url": f"sqlite:///{tmp_path}/store.db", "spool_dir": str(tmp_path / "spool"),
        "checkpoint_dir": str(tmp_path / "ckpt"), "bridge": {"client_id": "bridge-standalone"},
        "job": {"window_s": 1, "out_of_orderness_s": 0.5}})
    config = tmp_path / "cloud.toml"
    config.write_text(to_toml(cfg))
    bridge = Bridge(cfg)
    sim = GatewaySim(broker.url, "s1", "g1")
    job_id = ""
    try:
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
        bridge.stop()
        sim.close()


class SpoolWriter(threading.Thread):
    """Writes spool files (what the bridge writes) every ``every_s``: per gateway one critical
    alert and one heartbeat, event time = now. Keeps writing while the job is stopped."""

    GATEWAYS = ("g0", "g1", "g2", "g3")

    def __init__(self, spool: Path, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.spool, self.every_s = spool, every_s
        self.alerts: list[tuple[str, str, int]] = []  # (id, asset, ev_ms)
        self.stop_ = threading.Event()
        self.seq = 0

    def write(self, t_ns: int, *, alerts: bool = True) -> None:
        from edgevib.cloud.ingest.records import dumps_line, normalize

        from edgevib.protocol import dumps, make_alert, make_heartbeat

        lines: list[bytes] = []
        new: list[tuple[str, str, int]] = []
        for g in self.GATEWAYS:
            docs = [(f"edgevib/v1/s1/{g}/heartbeat", make_heartbeat(site="s1", gateway=g, t_ns=t_ns, uptime_s=1.0,
                                                                   sensors={}, drops={}, counters={}, resources={}))]
            if alerts:
                a = make_alert(site="s1", gateway=g, sensor="de", kind="fault", state="raised", t_ns=t_ns,
                               cls="IR021", probability=0.95, severity="critical")
                docs.append((f"edgevib/v1/s1/{g}/alerts", a))
                new.append((a["id"], f"s1/{g}/de", t_ns // 1_000_000))
            for topic, doc in docs:
                lines.append(dumps_line(normalize(topic, dumps(doc), t_ns // 1_000_000, f"w-{self.seq}-{len(lines)}")))
        name = f"20000101T000000-rescale-{self.seq:08d}.csv"
        tmp = self.spool / f".{name}.tmp"  # hidden until complete, like the bridge's files
        tmp.write_bytes(b"".join(lines))
        tmp.rename(self.spool / name)
        self.seq += 1
        self.alerts.extend(new)

    def run(self) -> None:
        while not self.stop_.wait(self.every_s):
            self.write(time.time_ns())


@pytest.mark.slow
def test_rescale_1_2_1_from_savepoints_loses_and_doubles_nothing(cluster: Any, tmp_path: Path) -> None:
    """Stop with a savepoint, restart at another parallelism, twice, while the spool keeps filling.

    Alerts: stored ids = written ids. Windowed counts (keyed SQL window state) equal the counts
    computed here. Incidents (the Python operator's keyed state): one per asset whose alert
    count is every alert of that asset; a bucket replayed twice would count more, a key whose
    state was lost in the redistribution would open a second incident.
    """
    from edgevib.cloud.store import Store

    cfg = load_config(None, env={}, overrides={
        "broker_url": "mqtt://127.0.0.1:1", "store_url": f"sqlite:///{tmp_path}/store.db",
        "spool_dir": str(tmp_path / "spool"), "checkpoint_dir": str(tmp_path / "ckpt"),
        "job": {"window_s": 2, "out_of_orderness_s": 1.0, "incident_k": 3, "incident_window_s": 3600,
                "incident_bucket_s": 1, "incident_resolve_s": 3600, "offline_after_s": 600,
                "checkpoint_interval_ms": 1000, "file_monitor_ms": 100}})
    config = tmp_path / "cloud.toml"
    config.write_text(to_toml(cfg))
    Path(cfg.spool_dir).mkdir(parents=True)
    store = Store(cfg.store_url)
    writer = SpoolWriter(Path(cfg.spool_dir))
    writer.start()
    job_id = ""

    def caught_up() -> None:
        n = len(writer.alerts)
        wait_until(lambda: store.query("SELECT COUNT(*) FROM alerts")[0][0] >= n, 240,
                   f"the job to store the {n} alerts written so far", lambda: _running(cluster, job_id), interval=0.5)

    try:
        savepoints: list[Path] = []
        for parallelism in (1, 2, 1):
            job_id = cluster.submit(config, restore=str(savepoints[-1]) if savepoints else "", parallelism=parallelism)
            caught_up()
            vertices = cluster.job_parallelism(job_id)
            assert max(vertices.values()) == parallelism, vertices
            if len(savepoints) < 2:
                savepoints.append(cluster.stop_with_savepoint(job_id))
                job_id = ""
        writer.stop_.set()
        writer.join(10)
        # The last alerts' windows and buckets close when event time passes them.
        writer.write(time.time_ns() + 10_000_000_000, alerts=False)
        caught_up()
        expected = Counter(asset for _, asset, _ in writer.alerts)
        wait_until(lambda: {r[0]: r[1] for r in store.query("SELECT asset, SUM(n_alerts) FROM incidents GROUP BY asset")}
                   == expected, 120, "incident counts to reach every written alert", lambda: _running(cluster, job_id),
                   interval=0.5)
        ids = [r[0] for r in store.query("SELECT id FROM alerts")]
        assert sorted(ids) == sorted(i for i, _, _ in writer.alerts)
        incidents = store.incidents()
        assert sorted(i["asset"] for i in incidents) == sorted(expected), incidents  # one per asset, never reopened
        windows = Counter((asset, ev // 2000 * 2000) for _, asset, ev in writer.alerts)
        wait_until(lambda: {(a, w): n for (a, w, _, _), n in store.asset_counts().items()} == windows, 60,
                   "windowed counts equal to the written alerts", lambda: _running(cluster, job_id), interval=0.5)
        assert {g["gateway"] for g in store.gateways().values() if g["status"] == "online"} == set(SpoolWriter.GATEWAYS)
        assert len(savepoints) == 2 and all(p.exists() for p in savepoints)
    finally:
        writer.stop_.set()
        if job_id:
            cluster.cancel(job_id)
        store.close()


def _running(cluster: Any, job_id: str) -> None:
    if job_id:
        try:
            state = cluster.job_state(job_id)
        except OSError:  # a slow answer on a loaded machine is not a failed job
            return
        assert state in ("CREATED", "INITIALIZING", "RUNNING"), f"job {job_id} is {state}; see {cluster.log_dir}"
