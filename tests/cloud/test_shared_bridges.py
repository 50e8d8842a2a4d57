"""Issue 18: three bridge processes share the MQTT load (``bridge.share_group``) on a real
Mosquitto; one is SIGKILLed mid-stream and restarted under its client id, as its supervisor
would. Every published alert reaches the spool; the broker's redeliveries are duplicates by
id, which the store removes (its primary key), so stored = published.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES
from edgevib.cloud.testing import BridgeProcess

from edgevib.broker import MosquittoProcess
from edgevib.protocol import dumps, make_alert

pytestmark = pytest.mark.integration

GATEWAYS = 20
PER_GATEWAY = 300


def _spooled(spool: Path) -> tuple[Counter[str], dict[str, set[str]]]:
    """Alert id -> lines in the spool; spool run id (one per bridge process) -> alert ids it wrote."""
    lines: Counter[str] = Counter()
    by_run: dict[str, set[str]] = {}
    for p in spool.glob("*.csv"):
        run = p.name.split("-")[1]
        for cells in csv.reader(p.read_text().splitlines()):
            row = dict(zip(SPOOL_COLUMN_NAMES, cells, strict=False))
            if row["kind"] == "alert":
                lines[row["id"]] += 1
                by_run.setdefault(run, set()).add(row["id"])
    return lines, by_run


def test_shared_bridges_lose_nothing_when_one_is_killed_under_load(broker: MosquittoProcess, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "spool_dir": tmp_path / "spool", "checkpoint_dir": tmp_path / "chk",
        "store_url": f"sqlite:///{tmp_path}/s.db", "bridge": {"flush_ms": 50}})
    bridges = [BridgeProcess(cfg, tmp_path / "bridges", f"bridge-{i}", "bridges") for i in range(3)]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-pub")
    pub.max_inflight_messages_set(500)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    sent: list[str] = []
    try:
        for b in bridges:
            b.start()
        victim = bridges[1]
        killed_at = restarted_at = 0
        infos = []
        for n in range(PER_GATEWAY):
            for g in range(GATEWAYS):
                a = make_alert(site="p1", gateway=f"gw{g:03d}", sensor="de", kind="fault", state="raised",
                               t_ns=time.time_ns(), cls="IR007", probability=0.9, physics="IR", agree=True)
                infos.append(pub.publish(f"edgevib/v1/p1/gw{g:03d}/alerts", dumps(a), qos=1))
                sent.append(a["id"])
            if n == PER_GATEWAY // 3:  # mid-stream: a crash with a batch in flight and unacked
                victim.kill()
                killed_at = len(sent)
            if n == PER_GATEWAY // 2:  # its supervisor restarts it under the same client id
                victim.start()
                restarted_at = len(sent)
            time.sleep(0.004)
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_spooled(cfg.spool_dir)[0]) < len(sent):
            time.sleep(0.3)
        for b in bridges:
            b.stop()
        lines, by_run = _spooled(cfg.spool_dir)
        dup = sum(n - 1 for n in lines.values())
        print(f"\nshared bridges: {len(sent)} alerts published, {len(lines)} distinct spooled, {dup} duplicate lines, "
              f"files from {len(by_run)} bridge runs: {sorted(len(v) for v in by_run.values())}")
        assert set(lines) == set(sent), f"{len(set(sent) - set(lines))} alerts lost"
        assert len(by_run) == 4, "three bridges, one restarted (a new run id): each wrote spool files"
        assert all(len(v) > len(sent) // 20 for v in by_run.values()), "the broker split the load"
        # What the broker had for the dead member (in flight and its share of what followed)
        # went to its restarted self: alerts published while it was down, spooled by its second run.
        second = by_run[max(by_run, key=lambda r: int(r[:-4], 16))]
        assert second & set(sent[killed_at:restarted_at]), "the restarted bridge took over its session's queue"

        # The store removes duplicates by id: stored = published.
        from edgevib.cloud.store import Store  # noqa: PLC0415

        store = Store(cfg.store_url)
        try:
            store.upsert("alerts", ({"id": i, "site": "p1", "gateway": "g", "sensor": "de", "ev_ms": 0}
                                    for i, n in lines.items() for _ in range(n)))
            assert store.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM alerts")[0] == (len(sent), len(sent))
        finally:
            store.close()
    finally:
        pub.loop_stop()
        pub.disconnect()
        for b in bridges:
            b.kill()
