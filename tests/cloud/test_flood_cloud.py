"""Issue 19, cloud: 100,000 invalid messages from one gateway on a real broker while another
gateway's alerts arrive. The bridge's spool (the durable ingest) stays within its quota and
holds every one of the other gateway's alerts. Flink is not needed: what reaches the spool
reaches the store."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.bridge import Bridge
from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES

from edgevib.broker import MosquittoProcess
from edgevib.protocol import dumps, make_alert

FLOOD = 100_000
GOOD = 200
QUOTA = 2**20


def _spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("*.csv"))


def _alerts(spool: Path) -> dict[str, int]:
    """The good gateway's alert ids in the spool -> ms from the alert's time to its file on disk."""
    out = {}
    for p in spool.glob("*.csv"):
        written_ms = int(p.stat().st_mtime * 1000)
        for cells in csv.reader(p.read_text().splitlines()):
            row = dict(zip(SPOOL_COLUMN_NAMES, cells, strict=False))
            if row["kind"] == "alert" and row["gateway"] == "good":
                out[row["id"]] = written_ms - int(row["ev_ms"])
    return out


@pytest.mark.integration
def test_flood_of_invalid_messages_stays_in_quota_and_alerts_get_through(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    # The per-gateway rate limit set high, so the quota is what bounds the spool here.
    cfg = load_config(None, overrides={"broker_url": broker.url, "spool_dir": tmp_path / "spool",
                                       "checkpoint_dir": tmp_path / "chk", "store_url": f"sqlite:///{tmp_path}/s.db",
                                       "bridge": {"spool_max_bytes": QUOTA, "dead_letters_per_min": 1e7,
                                                  "dead_letters_total_per_min": 1e7}})
    bridge = Bridge(cfg)
    bridge.start()
    before = _spool_bytes(bridge.spool)
    flooder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
    good = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="good-gateway")
    for c in (flooder, good):
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
    sent_ids: list[str] = []

    def publish_alerts() -> None:
        for _ in range(GOOD):
            a = make_alert(site="p1", gateway="good", sensor="de", kind="fault", state="raised",
                           t_ns=time.time_ns(), cls="IR007", probability=0.9, physics="IR", agree=True)
            sent_ids.append(a["id"])
            good.publish("edgevib/v1/p1/good/alerts", dumps(a), qos=1).wait_for_publish(5)
            time.sleep(0.01)

    try:
        t = threading.Thread(target=publish_alerts)
        t0 = time.monotonic()
        t.start()
        junk = b"{" + b"x" * 500
        for i in range(FLOOD):
            flooder.publish("edgevib/v1/p1/flood/alerts", junk, qos=0)
            if i % 2000 == 0:  # let paho's network thread drain its buffer
                time.sleep(0.001)
        flood_s = time.monotonic() - t0
        t.join(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(_alerts(bridge.spool)) < GOOD
                                               or bridge.stats.received < FLOOD + GOOD):
            time.sleep(0.5)
        time.sleep(1)
        s = bridge.stats
        growth = _spool_bytes(bridge.spool) - before
        print(f"\nflood: {FLOOD} published in {flood_s:.1f} s; bridge received {s.received}, dead written {s.dead}, "
              f"dropped over quota {s.dead_over_quota}, spool growth {growth} bytes (quota {QUOTA})")
        lat = sorted(_alerts(bridge.spool).values())
        p99 = lat[int(0.99 * (len(lat) - 1))]  # printed, not asserted: a timing figure (publisher shares our GIL)
        print(f"other gateway's alerts: publish -> spool file p50 {lat[len(lat) // 2]} ms, p99 {p99} ms")
        assert set(_alerts(bridge.spool)) == set(sent_ids), "every alert of the other gateway spooled"
        assert growth <= QUOTA
        assert s.received >= FLOOD * 0.9, "the flood reached the bridge (else this tests nothing)"
        assert s.dead_over_quota > 0 and s.over_quota_writes == 0
    finally:
        for c in (flooder, good):
            c.loop_stop()
            c.disconnect()
        bridge.stop()
