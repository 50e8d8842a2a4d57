"""Issue 19, cloud: other gateways' alert latency while one gateway floods 100,000 invalid messages.

A private Mosquitto, ``--bridges`` bridge processes (``edgevib cloud bridge``; more than one
share the load through ``bridge.share_group``), one flooder publishing ``--flood`` invalid
500-byte messages at QoS 0 on ``.../flood/alerts`` as fast as it can, and ``--gateways``
good gateways each publishing an alert every ``--interval`` s at QoS 1 meanwhile. Prints
publish -> spool file latency (p50/p99/max) of the good alerts and publish -> bridge
arrival (``recv_ms``), the bridges' CPU seconds (messages per bridge CPU-second: how many
bridge cores a flood of a given rate needs), with ``uptime``. What reaches the spool reaches the store (the
job's cost is measured by benchmarks/cloud_throughput.py).

    .venv/bin/python benchmarks/flood_cloud.py [--bridges 3] [--flood 100000]

Target (issue 19): p99 <= 2 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES
from edgevib.cloud.testing import BridgeProcess

from edgevib.broker import MosquittoProcess
from edgevib.protocol import dumps, make_alert


def _good_alerts(spool: Path) -> dict[str, tuple[int, int]]:
    """Good alerts' id -> (ms publish -> bridge arrival, ms publish -> spool file)."""
    out = {}
    for p in spool.glob("*.csv"):
        written_ms = int(p.stat().st_mtime * 1000)
        for cells in csv.reader(p.read_text().splitlines()):
            row = dict(zip(SPOOL_COLUMN_NAMES, cells, strict=False))
            if row["kind"] == "alert" and row["gateway"].startswith("good"):
                ev = int(row["ev_ms"])
                out[row["id"]] = (int(row["recv_ms"]) - ev, written_ms - ev)
    return out


def _pct(xs: list[int], q: float) -> int:
    xs = sorted(xs)
    return xs[int(q * (len(xs) - 1))] if xs else -1


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (the bridges)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(bridges: int, flood: int, gateways: int, interval: float, workdir: Path) -> dict[str, Any]:
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    broker = MosquittoProcess()
    broker.start()
    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "spool_dir": workdir / "spool", "checkpoint_dir": workdir / "chk",
        "store_url": f"sqlite:///{workdir}/s.db",
        "bridge": {"spool_max_bytes": 2**20, "dead_letters_per_min": 1e7, "dead_letters_total_per_min": 1e7}})
    group = "bridges" if bridges > 1 else ""
    procs = [BridgeProcess(cfg, workdir / "bridges", f"bridge-{i}", group) for i in range(bridges)]
    flooder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
    good = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="good")
    good.max_inflight_messages_set(1000)
    sent: list[str] = []
    stop = threading.Event()
    try:
        for b in procs:
            b.start()
        for c in (flooder, good):
            c.connect("127.0.0.1", broker.port)
            c.loop_start()

        def publish_alerts() -> None:
            while not stop.is_set():
                for g in range(gateways):
                    a = make_alert(site="p1", gateway=f"good{g}", sensor="de", kind="fault", state="raised",
                                   t_ns=time.time_ns(), cls="IR007", probability=0.9, physics="IR", agree=True)
                    good.publish(f"edgevib/v1/p1/good{g}/alerts", dumps(a), qos=1)
                    sent.append(a["id"])
                stop.wait(interval)

        pids = [b.proc.pid for b in procs if b.proc is not None]
        cpu0 = _cpu(pids)
        t = threading.Thread(target=publish_alerts)
        t0 = time.monotonic()
        t.start()
        junk = b"{" + b"x" * 500
        for i in range(flood):
            flooder.publish("edgevib/v1/p1/flood/alerts", junk, qos=0)
            if i % 2000 == 0:
                time.sleep(0.001)
        flood_s = time.monotonic() - t0
        time.sleep(1.0)  # good alerts keep coming while the bridges work off the backlog
        stop.set()
        t.join()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_good_alerts(cfg.spool_dir)) < len(sent):
            time.sleep(0.5)
        cpu = _cpu(pids) - cpu0
        lat = _good_alerts(cfg.spool_dir)
        recv = [r for r, _ in lat.values()]
        spool = [w for _, w in lat.values()]
        return {"bridges": bridges, "flood": flood, "flood_s": round(flood_s, 1), "good_sent": len(sent),
                "good_spooled": len(lat), "recv_p50_ms": _pct(recv, 0.5), "recv_p99_ms": _pct(recv, 0.99),
                "spool_p50_ms": _pct(spool, 0.5), "spool_p99_ms": _pct(spool, 0.99), "spool_max_ms": max(spool),
                "bridge_cpu_s": round(cpu, 1), "msgs_per_bridge_cpu_s": round((flood + len(sent)) / cpu) if cpu else None,
                "uptime": os.popen("uptime").read().strip()}
    finally:
        stop.set()
        for c in (flooder, good):
            c.loop_stop()
            c.disconnect()
        for b in procs:
            b.stop()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bridges", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--flood", type=int, default=100_000)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.05)
    args = ap.parse_args()
    for n in args.bridges:
        with tempfile.TemporaryDirectory(prefix="edgevib-floodcloud-") as d:
            print(json.dumps(run(n, args.flood, args.gateways, args.interval, Path(d))), flush=True)


if __name__ == "__main__":
    main()
