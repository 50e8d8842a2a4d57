"""Issue 18: MQTT -> spool throughput of N bridge processes and their cost per message.

A private Mosquitto, ``--bridges`` bridge processes (``edgevib cloud bridge``, sharing the
load through ``bridge.share_group`` when more than one) and one publisher process sending
``--messages`` valid messages at QoS 1 as fast as it can: per gateway a heartbeat, one
sensor's indicators and every tenth time an alert (the fleet mix of benchmarks/fleet_sim.py).
Prints messages/s from the first publish to the last spooled line, and the bridges' CPU
seconds (psutil: user + system of each bridge process tree), so **messages per CPU-second**:
the per-core figure docs/scale.md sizes the bridges with (wall time on a shared machine
depends on its load; CPU time much less). ``uptime`` is printed with each line.

    .venv/bin/python benchmarks/bridge_throughput.py [--bridges 1 2] [--messages 60000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from edgevib.cloud.config import load_config
from edgevib.cloud.testing import BridgeProcess

from edgevib.broker import MosquittoProcess

PUBLISHER = r'''
import sys, time, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from edgevib.protocol import Topics, dumps, make_alert, make_heartbeat, make_indicators
port, n = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tp-pub")
c.max_inflight_messages_set(2000)
c.connect("127.0.0.1", port); c.loop_start()
msgs = []
g = 0
while len(msgs) < n:
    site, gw = f"site{g % 20:02d}", f"gw{g:05d}"
    t = Topics(site, gw); t_ns = time.time_ns() + g
    msgs.append((t.heartbeat, dumps(make_heartbeat(site=site, gateway=gw, t_ns=t_ns, uptime_s=1.0,
        model={"name": "m", "version": "1", "sha256": "0" * 64}, sensors={"de": {"frames": 1}}, drops={},
        counters={}, resources={}, outbox_pending=0, agent_version="tp"))))
    msgs.append((t.indicators, dumps(make_indicators(site=site, gateway=gw, sensor="de", t_ns=t_ns, duration_s=1.0,
        sample_rate=12000.0, acc_rms_g=0.1, acc_peak_g=0.4, crest=4.0, kurtosis=3.1, vel_rms_mm_s=1.2, iso_zone="A",
        iso_group=2, iso_foundation="rigid", env_db={"bpfo": 1.0, "bpfi": 0.5, "bsf2": 0.2, "ftf": 0.1}, rpm=1750.0,
        rpm_source="configured"))))
    if g % 10 == 0:
        msgs.append((t.alerts, dumps(make_alert(site=site, gateway=gw, sensor="de", kind="fault", state="raised",
            t_ns=t_ns, cls="IR007", probability=0.9, physics="IR", agree=True))))
    g += 1
msgs = msgs[:n]
print("ready", flush=True); sys.stdin.readline()
infos = [c.publish(topic, payload, qos=1) for topic, payload in msgs]
for i in infos: i.wait_for_publish(120)
print("done", flush=True)
'''


def _lines(spool: Path) -> int:
    n = 0
    for p in spool.glob("*.csv"):
        with open(p, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(bridges: int, messages: int, workdir: Path) -> dict[str, Any]:
    broker = MosquittoProcess(max_queued=1_000_000)
    broker.start()
    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "spool_dir": workdir / "spool", "checkpoint_dir": workdir / "chk",
        "store_url": f"sqlite:///{workdir}/s.db"})
    procs = [BridgeProcess(cfg, workdir / "bridges", f"bridge-{i}", "bridges" if bridges > 1 else "")
             for i in range(bridges)]
    pub = None
    try:
        for b in procs:
            b.start()
        pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(broker.port), str(messages)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert pub.stdout is not None and pub.stdin is not None
        assert pub.stdout.readline().strip() == "ready"
        pids = [b.proc.pid for b in procs if b.proc is not None]
        cpu0, t0 = _cpu(pids), time.monotonic()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        deadline = t0 + 600
        while _lines(cfg.spool_dir) < messages and time.monotonic() < deadline:
            time.sleep(0.2)
        wall = time.monotonic() - t0
        cpu = _cpu(pids) - cpu0
        got = _lines(cfg.spool_dir)
        return {"bridges": bridges, "messages": messages, "spooled": got, "wall_s": round(wall, 1),
                "msgs_per_s": round(got / wall), "bridge_cpu_s": round(cpu, 1),
                "msgs_per_cpu_s": round(got / cpu) if cpu else None, "uptime": os.popen("uptime").read().strip()}
    finally:
        if pub is not None:
            pub.kill()
            pub.wait()
        for b in procs:
            b.stop()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bridges", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--messages", type=int, default=60_000)
    args = ap.parse_args()
    for n in args.bridges:
        with tempfile.TemporaryDirectory(prefix="edgevib-bridge-tp-") as d:
            print(json.dumps(run(n, args.messages, Path(d))), flush=True)


if __name__ == "__main__":
    main()
