"""The outbox's disk fills up: the agent keeps running, counts what it could not store, loses nothing.

The outbox lives on a private 1 MiB tmpfs (``mount -t tmpfs``; the suite runs as root).
Three phases, each a burst of fault frames from fresh sensors:

1. space: alerts go through the outbox (stored, published, deleted on PUBACK);
2. the tmpfs is filled with a filler file to ENOSPC: the outbox cannot store the new
   alerts; the agent publishes each directly at QoS 1 and counts it as
   ``outbox_write_failed``; it must keep running and every alert must arrive;
3. the filler is deleted: alerts go through the outbox again (``alerts_acked`` grows,
   ``outbox_write_failed`` does not).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevib.broker import MosquittoProcess
from tests.reliability.common import (
    CloudBridge,
    Publisher,
    Subscriber,
    agent_cmd,
    raised_by_agent,
    settled,
    start_agent,
    stop_agent,
    wait,
    write_counts,
)

pytestmark = pytest.mark.integration
FIX = "run the suite as root (or with CAP_SYS_ADMIN) so it can 'mount -t tmpfs'"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "obfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:  # never a skip: this fault must be exercised wherever the suite runs
        pytest.fail(f"reliability: cannot mount a 1 MiB tmpfs at {mnt} ({r.stderr.strip()}); {FIX}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    """Write zeros until ENOSPC; returns the filler."""
    filler = mnt / "filler"
    f = open(filler, "wb")  # noqa: SIM115 - closing may itself raise ENOSPC
    try:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    except OSError:
        pass
    try:
        f.close()
    except OSError:
        pass
    return filler


def test_outbox_disk_full_agent_survives_publishes_directly_and_recovers(
        broker: MosquittoProcess, small_fs: Path, tmp_path: Path) -> None:
    ob = small_fs / "ob.sqlite"
    sub = Subscriber(broker.port, "rel-cloud-disk")
    bridge = CloudBridge(broker.url, tmp_path, "rel-bridge-disk")
    pub = Publisher(broker.port)
    agent = start_agent(agent_cmd(broker.url, ob), tmp_path / "agent.log")
    try:
        wait(lambda: bool(sub.last_hb()), 30, "the agent's first heartbeat")

        def phase(sensors: list[str]) -> dict[str, int]:
            pub.burst(sensors, "IR", n=4)
            wait(lambda: set(sensors) <= sub.sensors(), 20, f"alerts of {sensors}")
            wait(settled(sub), 20, "the agent to settle", strict=False)
            c = sub.last_hb()["counters"]
            return {"published": raised_by_agent(sub.last_hb()), "acked": int(c.get("alerts_acked", 0)),
                    "write_failed": int(c.get("outbox_write_failed", 0))}

        p1 = phase(["d1a", "d1b"])
        assert p1["acked"] == p1["published"] >= 2 and p1["write_failed"] == 0, p1
        filler = _fill(small_fs)
        free = subprocess.run(["df", "-k", "--output=avail", str(small_fs)], capture_output=True, text=True).stdout
        p2 = phase(["d2a", "d2b", "d2c"])
        assert agent.poll() is None, "the agent survived a full disk"
        assert p2["write_failed"] > 0, f"the outbox should have failed on the full disk: {p2}"
        assert p2["acked"] + p2["write_failed"] == p2["published"], p2
        filler.unlink()
        p3 = phase(["d3a", "d3b"])
        assert p3["write_failed"] == p2["write_failed"], f"space is back: alerts are stored again {p3}"
        assert p3["acked"] - p2["acked"] == p3["published"] - p2["published"] >= 2, (p2, p3)
        hb = sub.last_hb()
        counts = {
            "outbox_fs": "tmpfs size=1m", "free_kb_when_full": free.split()[-1] if free.split() else "?",
            "alerts_published": p3["published"], "alerts_received_raw": len(sub.alerts),
            "alerts_delivered_distinct": len(sub.ids()), "alerts_acked_via_outbox": p3["acked"],
            "alerts_stored_bridge_spool": len(bridge.alert_ids(at_least=p3["published"])),
            "outbox_write_failed": p3["write_failed"], "outbox_errors": int(hb["counters"].get("outbox_errors", 0)),
            "phases": {"space": p1, "disk_full": p2, "space_back": p3},
            "outbox_pending_end": hb["outbox_pending"], "agent_alive": agent.poll() is None,
        }
        write_counts("disk_full", counts)
        assert len(sub.ids()) == p3["published"] == p3["acked"] + p3["write_failed"], counts
        assert {"d1a", "d1b", "d2a", "d2b", "d2c", "d3a", "d3b"} <= sub.sensors()
        assert bridge.alert_ids() == sub.ids(), counts
    finally:
        stop_agent(agent)
        bridge.stop()
        pub.close()
        sub.close()
