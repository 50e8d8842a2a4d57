"""``edgevib demo``: the whole edge path on one machine, in one command.

It finds an MQTT broker (or starts one), starts an agent for one gateway, streams
simulated sensors into it (healthy ones and one bearing that develops an inner-race
fault part-way through), and prints heartbeats and alerts as they arrive. The cloud side
runs too: the MQTT bridge and the Flink job writing a SQLite alert store, and the web
dashboard on 127.0.0.1 (its URL, with a fresh login token, is printed first). Before the
live part it publishes hours of history (edgevib/demo_history.py: a motor drifting into ISO
zone C then D, the pump's bearing fault developing), so trends, level crossings, the plant
overview and the waterfall have something to show at once. Without a
JDK or pyflink the demo says so and goes on with agent and dashboard. Ctrl-C, or
``--duration S``, stops everything cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgevib.broker import find_or_start

SITE = "demo"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run broker, agent, simulated sensors, cloud job and dashboard together",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=0, help="seconds to run; 0 = until Ctrl-C")
    p.add_argument("--broker", default=None, help="MQTT URL; default: find one on 127.0.0.1:1883 or start one")
    p.add_argument("--healthy", type=int, default=3, help="number of healthy simulated sensors")
    p.add_argument("--fault", default="IR", choices=["IR", "OR", "B"], help="fault the failing bearing develops")
    p.add_argument("--onset", type=float, default=None, help="seconds until the fault starts (default: 1/4 of the run, or 15)")
    p.add_argument("--no-cloud", action="store_true", help="skip the bridge + Flink job")
    p.add_argument("--cloud-wait", type=float, default=30.0,
                   help="after --duration, wait up to S seconds for the job to store the raised alerts")
    p.add_argument("--no-dashboard", action="store_true", help="skip the web dashboard")
    p.add_argument("--history", type=float, default=6.0,
                   help="hours of indicator history (a motor drifting into zone C then D, the pump's bearing fault "
                        "developing) published before the live part, for the dashboard's trends; 0 = none")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep outbox, store, spool and logs here (default: a temporary directory, deleted)")
    p.set_defaults(func=run)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgevib.cli", *args]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _line(kind: str, doc: dict[str, Any]) -> str:
    if kind == "alerts":
        what = doc.get("class") if doc.get("kind") == "fault" else f"score={doc.get('anomaly_score')}"
        prob = doc.get("probability")
        return (f"ALERT  {doc.get('state', ''):7} {doc.get('kind', ''):7} sensor={doc.get('sensor')} {what} "
                + (f"p={prob:.2f} " if isinstance(prob, float) else "")
                + f"severity={doc.get('severity')} physics={doc.get('physics')} agrees={doc.get('agree')}"
                + (f" verdict={v.get('fault_type')} ({v.get('confidence', 0):.2f}, {'+'.join(v.get('carried_by', []))})"
                   if isinstance(v := doc.get("verdict"), dict) else ""))
    if kind == "heartbeat":
        c, r = doc.get("counters", {}), doc.get("resources", {})
        return (f"beat   sensors={len(doc.get('sensors', {}))} frames={c.get('frames_in', 0)} "
                f"windows={c.get('windows', 0)} dropped={sum(doc.get('drops', {}).values())} "
                f"latency_p99={c.get('latency_p99_ms', 0):.1f}ms rss={r.get('rss_mb', 0):.0f}MB "
                f"outbox={doc.get('outbox_pending')}")
    return f"status {doc}"


def run(args: argparse.Namespace) -> int:
    from edgevib.demo_cloud import CloudSide
    from edgevib.edge.mqtt import MqttLink
    from edgevib.protocol import Topics

    url, started = find_or_start(args.broker)
    gateway = f"gw{os.getpid()}"
    topics = Topics(SITE, gateway)
    duration = float(args.duration)
    onset = args.onset if args.onset is not None else (duration / 4 if duration > 0 else 15.0)
    print(f"edgevib demo: broker {url}, site {SITE}, gateway {gateway}", flush=True)
    print(f"  {args.healthy} healthy sensors, 1 bearing developing a {args.fault} fault after {onset:.0f} s", flush=True)
    print(f"  watch it yourself: mosquitto_sub -h 127.0.0.1 -p {url.rsplit(':', 1)[-1]} -t '{topics.base}/#' -v",
          flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    monitor = MqttLink(url, client_id=f"edgevib-demo-{os.getpid()}")
    for kind in ("alerts", "heartbeat", "status"):
        monitor.subscribe(f"{topics.base}/{kind}")
    raised: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="edgevib-demo-") if args.workdir is None else None
    work = Path(tmp.name) if tmp is not None else Path(args.workdir)  # outbox, store, spool, logs
    work.mkdir(parents=True, exist_ok=True)
    cloud = CloudSide(url, work, cloud=not args.no_cloud, dashboard=not args.no_dashboard)
    interrupted = False
    crossings: set[str] = set()  # level crossings the seeded history makes; the end waits for them too
    try:
        cloud.start_dashboard()
        if cloud.dashboard_url:
            print(f"  dashboard: {cloud.dashboard_url}", flush=True)
        cloud.start_cloud()
        if cloud.job is not None:
            print(f"  cloud: bridge + Flink job -> {cloud.store_url} (job log {cloud.job.log_path}); "
                  "the job needs ~20-60 s to start, alerts wait in the spool meanwhile", flush=True)
        for problem in cloud.problems:
            print(f"edgevib demo: {problem}; going on without it", file=sys.stderr, flush=True)
        fans = [] if args.healthy <= 0 else ["fan"] if args.healthy == 1 else [f"fan-{i}" for i in range(args.healthy)]
        if args.history > 0 and (cloud.bridge is not None or cloud.collector is not None):
            from edgevib.cloud.config import load_config
            from edgevib.demo_history import publish_history

            # Before the agent: the job's event time runs through the history, then into the live data.
            n_ind, n_ev, crossings = publish_history(monitor, SITE, gateway, fans, args.fault, now_ns=time.time_ns(),
                                                     hours=float(args.history),
                                                     levels=load_config(None, env={}).levels.logic())
            print(f"  history: {n_ind} indicator readings over {args.history:g} h (motor drifting into zone C, then D; "
                  f"pump's {args.fault} fault developing) and {n_ev} pump evidence windows", flush=True)
        # The agent uploads the windows behind alerts (and a few healthy ones) for the sensor page.
        agent_env = {**os.environ, "EDGEVIB_EVIDENCE__ENABLED": "true", "EDGEVIB_EVIDENCE__HEALTHY_EVERY": "200"}
        procs.append(subprocess.Popen(_cli("agent", "--broker", url, "--site", SITE, "--gateway", gateway,
                                           "--outbox", str(work / "outbox.sqlite")), env=agent_env))
        common = ("--broker", url, "--site", SITE, "--gateway", gateway, "--realtime")
        if args.healthy > 0:
            procs.append(subprocess.Popen(_cli("stream", *common, "--sensor", "fan", "--simulate",
                                               str(args.healthy), "--fault", "normal")))
        procs.append(subprocess.Popen(_cli("stream", *common, "--sensor", "pump", "--simulate", "1",
                                           "--fault", args.fault, "--onset", str(onset))))
        t0 = time.monotonic()
        while duration <= 0 or time.monotonic() - t0 < duration:
            died = cloud.check()
            if died:
                print(f"edgevib demo: {died}", file=sys.stderr, flush=True)
            if procs[0].poll() is not None:
                print(f"edgevib demo: the agent exited with code {procs[0].returncode}", file=sys.stderr)
                return 1
            msg = monitor.poll(0.5)
            if msg is None:
                continue
            kind = msg.topic.rsplit("/", 1)[-1]
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                doc = {"raw": msg.payload.decode(errors="replace")}
            if kind == "alerts" and doc.get("state") == "raised":
                raised.append(doc)
            print(f"{time.monotonic() - t0:7.1f}s {_line(kind, doc)}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\nedgevib demo: stopping", flush=True)
    finally:
        _stop(procs)
        monitor.close()
        stored = None
        if cloud.job is not None and not interrupted:
            # The job may still be working through the spool: give it a bounded moment.
            stored = cloud.wait_stored({str(a.get("id")) for a in raised}, float(args.cloud_wait),
                                       level_ids=crossings, gateway=(SITE, gateway))
        summary = cloud.store_alerts() if cloud.job is not None else []
        cloud.stop()
        if started is not None:
            started.stop()
        if tmp is not None:
            tmp.cleanup()
    faults = [a for a in raised if a.get("kind") == "fault"]
    print(f"edgevib demo: {len(raised)} alerts raised ({len(faults)} fault): "
          + ", ".join(f"{a.get('sensor')}:{a.get('class')}" for a in raised), flush=True)
    if cloud.job is not None:
        print(f"edgevib demo: cloud store: {len(summary)} alerts"
              + (f" ({stored} of {len(raised)} raised ones)" if stored is not None else "") + ": "
              + ", ".join(f"{a['sensor']}:{a['cls']}:{a['state']}" for a in summary), flush=True)
    return 0
