"""Edge agent throughput: how many 12 kHz sensors one agent process sustains, and its limits.

Runs a private Mosquitto, then measures, for the same frames and model:

1. the ONNX Runtime limit: windows/s of the model in a tight batched loop;
2. the paho limit: QoS 0 messages/s from a publisher process to a raw paho subscriber;
3. the agent: ``edgevib agent`` as its own process fed by N simulated sensors (a separate
   publisher process, real time) for a ladder of N, then a bisection: the largest N with
   no drops and no growing inbox backlog; latency (frame arrival -> window inferred and
   alert decided) p50/p99 and RSS from the agent's own heartbeat.

``--gateway`` runs the small-gateway profile: the agent pinned to one core (``taskset -c 0``)
under a 512 MB memory limit: ``systemd-run --user --scope -p MemoryMax=512M`` where a user
service manager answers, else (containers, VMs without a user bus) an address-space limit
(``RLIMIT_AS``, set in the agent process before it starts, which is stricter: it counts
reserved as well as used memory). The report says which limit applied. The simulated sensors'
publisher then runs on core 1: sensors are not on the gateway, and on the agent's core they
took its time (before 2026-12-05 it was unpinned).

Prints a report (not a test). Usage: ``python benchmarks/edge_throughput.py [--model M] [--gateway]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from edgevib.edge.cli import model_path
from edgevib.edge.runtime import OnnxModel
from edgevib.models.bearing import CWRU_DE_6205
from edgevib.models.orders import fault_frequencies
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess, parse_url
from edgevib.protocol.frames import Frame, encode

FS, FRAME, HOP = 12000.0, 4096, 1024
T = proto.Topics("bench", "gw")
WIN_PER_SENSOR = FS / HOP  # windows/s one sensor produces
FRAMES_PER_SENSOR = FS / FRAME


def onnx_limit(path: Path, batch: int, threads: int, seconds: float = 3.0) -> float:
    """Windows/s of the model alone, batches of ``batch``."""
    m = OnnxModel(path, threads=threads)
    x = simulate("IR", duration_s=batch * m.meta.window / FS + 0.1, seed=1)
    xb = np.stack([x[i * m.meta.window:(i + 1) * m.meta.window] for i in range(batch)])[:, None, :]
    # a model with an ``orders`` input gets each window's fault frequencies, as from the agent
    # (its order features are then part of the limit: numpy work the agent does per batch too)
    context = [fault_frequencies(CWRU_DE_6205, 1797.0)] * batch
    m.predict(xb, context)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m.predict(xb, context)
        n += batch
    return n / (time.perf_counter() - t0)


def _client(cid: str) -> paho.Client:
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid)


def paho_limit(url: str, payload: bytes, seconds: float = 4.0) -> float:
    """QoS 0 messages/s received by a raw paho subscriber from a publisher process."""
    host, port, _ = parse_url(url)
    got = [0]
    sub = _client("bench-sub")
    sub.on_message = lambda c, u, m: got.__setitem__(0, got[0] + 1)
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_connect = lambda c, *a: c.subscribe("bench/limit", 0)
    sub.connect(host, port)
    sub.loop_start()
    ready.wait(5)
    pub = subprocess.Popen([sys.executable, __file__, "--role", "blast", "--url", url,
                            "--seconds", str(seconds + 2), "--size", str(len(payload))])
    time.sleep(1.0)  # warm-up
    n0, t0 = got[0], time.monotonic()
    time.sleep(seconds)
    rate = (got[0] - n0) / (time.monotonic() - t0)
    pub.wait(30)
    sub.loop_stop()
    sub.disconnect()
    return rate


def _blast(url: str, seconds: float, size: int) -> None:
    host, port, _ = parse_url(url)
    c = _client("bench-pub")
    c.connect(host, port)
    c.loop_start()
    payload = os.urandom(size)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            c.publish("bench/limit", payload, qos=0)
        time.sleep(0.0005)  # let the network thread drain paho's queue
    c.loop_stop()
    c.disconnect()


def _sensors(url: str, n: int, seconds: float, offset: int) -> None:
    """Publisher role: n simulated sensors in real time (a quarter of them with an IR fault)."""
    host, port, _ = parse_url(url)
    c = _client(f"bench-sensors-{offset}")
    c.connect(host, port)
    c.loop_start()
    base = {f: simulate(f, duration_s=seconds + 1, seed=i) for i, f in enumerate(("normal", "IR", "OR", "B"))}
    names = [T.raw(f"s{offset + i}") for i in range(n)]
    faults = [("IR" if i % 4 == 0 else "normal") for i in range(n)]
    t0_ns, start = time.time_ns(), time.monotonic()
    sent = 0
    period = FRAME / FS
    for k in range(int(seconds * FRAMES_PER_SENSOR)):
        for i, topic in enumerate(names):
            # Real sensors are not synchronised: each sends at its own phase of the frame period.
            ahead = start + (k + i / n) * period - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            # sensors differ: each its own offset into the signal (np.roll(base, -i * 97)[frame k],
            # without copying the whole signal per frame)
            x = np.take(base[faults[i]], np.arange(k * FRAME, (k + 1) * FRAME) + i * 97, mode="wrap")
            c.publish(topic, encode(Frame(k, t0_ns + round(k * FRAME * 1e9 / FS), FS, x), "int16"), qos=0)
            sent += 1
    time.sleep(0.5)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"sent": sent}), flush=True)


GATEWAY_MB = 512


def inprocess_cpu(model: Path, n: int, seconds: float = 8.0, indicators: bool = True) -> dict[str, float]:
    """CPU seconds (``time.process_time``) the agent spends on ``n`` sensors x ``seconds`` of
    12 kHz signal fed through the in-memory link on signal time (speed estimates and
    indicators as live): the agent's own work per sensor-second, without MQTT, and much
    less sensitive to other load on the machine than the sustained-N ladder."""
    from edge_memory import FEED  # the feed the memory benchmark uses (same directory)
    from edgevib.edge.outbox import Outbox

    ns: dict[str, Any] = {}
    exec(FEED, ns)  # noqa: S102 - our own benchmark code
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(f"{tmp}/ob.sqlite")
        m = OnnxModel(model, threads=1)
        t0 = time.process_time()
        agent = ns["feed_agent"](outbox, m, n, seconds, indicators=indicators)
        cpu = time.process_time() - t0
        outbox.close()
    windows = agent.metrics.snapshot()["counters"].get("windows", 0)  # type: ignore[union-attr]
    return {"ms_per_sensor_s": cpu * 1000 / (n * seconds), "us_per_window": cpu * 1e6 / max(1, windows)}


def gateway_prefix() -> tuple[list[str], str, Any]:
    """(command prefix, what it applies, preexec function) for the small-gateway profile."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    if shutil.which("systemd-run"):
        probe = ["systemd-run", "--user", "--scope", "-q", "-p", f"MemoryMax={GATEWAY_MB}M", "true"]
        if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
            return (probe[:-1] + pin, f"one core (taskset -c 0), MemoryMax={GATEWAY_MB}M (systemd-run --user --scope)",
                    None)
    limit = GATEWAY_MB * 2**20

    def rlimit() -> None:  # runs in the agent process between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return pin, (f"one core (taskset -c 0), RLIMIT_AS={GATEWAY_MB} MB (no user service manager here for "
                 "systemd-run; the address-space limit is stricter than a cgroup's MemoryMax)"), rlimit


def agent_trial(url: str, model: Path, n: int, seconds: float, batch: int, threads: int,
                gateway: tuple[list[str], str, Any] | None = None) -> dict[str, Any]:
    host, port, _ = parse_url(url)
    hbs: list[dict[str, Any]] = []
    sub = _client(f"bench-cloud-{n}")
    sub.on_message = lambda c, u, m: hbs.append(json.loads(m.payload)) if m.topic == T.heartbeat else None
    sub.on_connect = lambda c, *a: c.subscribe(T.heartbeat, 0)
    sub.connect(host, port)
    sub.loop_start()
    with tempfile.TemporaryDirectory() as tmp:
        prefix, _, preexec = gateway or ([], "", None)
        agent = subprocess.Popen(
            [*prefix, sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", url, "--site", "bench", "--gateway", "gw",
             "--model", str(model), "--outbox", f"{tmp}/ob.sqlite", "--heartbeat", "1", "--batch-size", str(batch),
             "--threads", str(threads)], env={**os.environ, "EDGEVIB_INBOX_SIZE": "200000"}, preexec_fn=preexec)
        end = time.monotonic() + 60
        while not hbs and time.monotonic() < end:
            time.sleep(0.1)
        start_idx = len(hbs)
        # the sensors are not on the gateway: in its profile they stay off the agent's core
        off_core = ["taskset", "-c", "1"] if gateway and gateway[0] and (os.cpu_count() or 1) > 1 else []
        pub = subprocess.run([*off_core, sys.executable, __file__, "--role", "sensors", "--url", url, "--n", str(n),
                              "--seconds", str(seconds)], capture_output=True, text=True, check=True)
        sent = json.loads(pub.stdout.strip().splitlines()[-1])["sent"]
        drain_end = time.monotonic() + 5
        while time.monotonic() < drain_end:
            c = hbs[-1]["counters"]
            if c.get("frames_in", 0) >= sent and c.get("queue_depth", 1) == 0 and c.get("pending_windows", 1) == 0:
                break
            time.sleep(0.2)
        time.sleep(1.1)
        agent.terminate()
        agent.wait(20)
    sub.loop_stop()
    sub.disconnect()
    run = hbs[start_idx:]
    last = hbs[-1]
    depths = [h["counters"].get("queue_depth", 0) for h in run]
    late = depths[len(depths) // 2:] or [0]
    drops = sum(last["drops"].values())
    frames_in = last["counters"].get("frames_in", 0)
    ok = drops == 0 and frames_in >= sent and max(late) <= max(50, n)
    inferred, thinned = last["counters"].get("windows", 0), last["counters"].get("windows_thinned", 0)
    # the agent's p99 covers its last 2,048 windows (~1.8 s at 100 sensors): the worst over the
    # run's heartbeats (one a second) is the p99 of the worst stretch, the last one that of the end
    p99s = [h["counters"]["latency_p99_ms"] for h in run if h["counters"].get("windows", 0)]
    return {"n": n, "ok": ok, "sent": sent, "frames_in": frames_in, "drops": drops, "max_depth_late": max(late),
            "p50_ms": last["counters"]["latency_p50_ms"], "p99_ms": last["counters"]["latency_p99_ms"],
            "p99_worst_ms": max(p99s or [0.0]), "thinned": thinned / max(1, inferred + thinned), "p99_series": p99s,
            # with a budget the agent counts windows later than it over its whole life (this run):
            # the run's p99 is within the budget when at most 1 % are late
            "late": last["counters"].get("windows_late", 0) / max(1, inferred) if "batch_limit" in last["counters"] else None,
            "factors": [f'{h["counters"].get("thin_factor", 1)}' + (f' {h["counters"]["busy_share"]:.2f}'
                        f'+{h["counters"]["inference_share"]:.2f}' if "busy_share" in h["counters"] else "")
                        for h in run if h["counters"].get("windows", 0)],
            "infer_p50_ms": last["counters"]["inference_p50_ms"], "rss_mb": max(h["resources"]["rss_mb"] for h in run),
            "cpu": max(h["resources"]["cpu_percent"] for h in run)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("main", "blast", "sensors"), default="main")
    ap.add_argument("--url", default="")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ladder", default="25,50,100,200,400,800")
    ap.add_argument("--no-anomaly", action="store_true", help="agent without the anomaly baseline")
    ap.add_argument("--no-indicators", action="store_true", help="agent without the condition indicators")
    ap.add_argument("--inprocess", type=int, default=100,
                    help="sensors for the in-process CPU measurement (0: skip)")
    ap.add_argument("--latency-budget", type=float, default=0.0,
                    help="the agent's latency_budget_ms (0: off, every window inferred; edge/shedding.py)")
    ap.add_argument("--trace", action="store_true", help="print each heartbeat's p99 (and thinning factor)")
    ap.add_argument("--gateway", action="store_true",
                    help=f"small-gateway profile: the agent on one core under a {GATEWAY_MB} MB memory limit")
    args = ap.parse_args()
    if args.role == "blast":
        _blast(args.url, args.seconds, args.size)
        return 0
    if args.role == "sensors":
        _sensors(args.url, args.n, args.seconds, 0)
        return 0
    model = args.model or model_path("")
    if args.no_anomaly:
        os.environ["EDGEVIB_ALERT__ANOMALY"] = "false"  # inherited by the agent process
    if args.no_indicators:
        os.environ["EDGEVIB_INDICATORS__ENABLED"] = "false"
    if args.latency_budget:
        os.environ["EDGEVIB_LATENCY_BUDGET_MS"] = str(args.latency_budget)
    payload = encode(Frame(0, 0, FS, simulate("normal", duration_s=0.5)[:FRAME]), "int16")
    print(f"edge throughput benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  load avg {os.getloadavg()}  "
          f"cpus {os.cpu_count()}")
    window = OnnxModel(model).meta.window
    gateway = gateway_prefix() if args.gateway else None
    print(f"agent profile: {gateway[1] if gateway else 'unpinned, no memory limit'}")
    print(f"model {model.name}; frame {FRAME} int16 samples = {len(payload)} bytes; window {window} hop {HOP}; "
          f"batch {args.batch}; ORT threads {args.threads}; anomaly {'off' if args.no_anomaly else 'on'}; "
          f"indicators {'off' if args.no_indicators else 'on'}; latency budget "
          f"{f'{args.latency_budget:g} ms (overlapping windows thinned under overload)' if args.latency_budget else 'off'}")
    w_s = onnx_limit(model, args.batch, args.threads)
    print(f"ONNX Runtime limit : {w_s:9.0f} windows/s = {w_s / WIN_PER_SENSOR:7.0f} sensors")
    if args.inprocess:
        c = inprocess_cpu(model, args.inprocess, indicators=not args.no_indicators)
        print(f"agent work in-process ({args.inprocess} sensors x 8 s, memory link): {c['ms_per_sensor_s']:.2f} ms CPU "
              f"per sensor-second ({c['us_per_window']:.0f} us per window) = {1000 / c['ms_per_sensor_s']:.0f} sensors "
              f"per core before MQTT", flush=True)
    with MosquittoProcess() as broker:
        m_s = paho_limit(broker.url, payload)
        print(f"paho QoS0 limit    : {m_s:9.0f} msgs/s    = {m_s / FRAMES_PER_SENSOR:7.0f} sensors")
        limit = min(w_s / WIN_PER_SENSOR, m_s / FRAMES_PER_SENSOR)
        trials: list[dict[str, Any]] = []

        def trial(n: int) -> bool:
            r = agent_trial(broker.url, model, n, args.seconds, args.batch, args.threads, gateway)
            trials.append(r)
            print(f"agent N={n:4d}: {'sustained' if r['ok'] else 'BEHIND   '} sent {r['sent']} in {r['frames_in']} "
                  f"drops {r['drops']} late-depth {r['max_depth_late']} latency p50 {r['p50_ms']:.1f} ms "
                  f"p99 {r['p99_ms']:.1f} ms (worst heartbeat {r['p99_worst_ms']:.1f}) thinned {r['thinned']:.0%} "
                  f"infer p50 {r['infer_p50_ms']:.1f} ms RSS {r['rss_mb']:.0f} MB CPU {r['cpu']:.0f}%"
                  + (f" late {r['late']:.2%}" if r["late"] is not None else ""), flush=True)
            if args.trace:
                print("  p99 per heartbeat (ms) / thinning factor [busy+inference share]:",
                      ", ".join(f"{p:.0f}/{f}" for p, f in zip(r["p99_series"], r["factors"], strict=True)), flush=True)
            return bool(r["ok"])

        good, bad = 0, 0
        for n in (int(v) for v in args.ladder.split(",")):
            if trial(n):
                good = n
            else:
                bad = n
                break
        for _ in range(2 if bad else 0):
            mid = (good + bad) // 2
            if mid in (good, bad):
                break
            if trial(mid):
                good = mid
            else:
                bad = mid
    print(f"largest N sustained: {good} sensors ({good * WIN_PER_SENSOR:.0f} windows/s, "
          f"{good * FRAMES_PER_SENSOR:.0f} frames/s); first N behind: {bad or 'none tried'}")
    held = [t for t in trials if t["ok"]]
    full = max((t["n"] for t in held if t["thinned"] == 0), default=0)
    print(f"agent / smaller limit ({limit:.0f} sensors): {good / limit:.0%}  (target >= 35%)"
          + (f"; with every window inferred (none thinned): {full} sensors = {full / limit:.0%}"
             if args.latency_budget else ""))
    if held:
        top = max(held, key=lambda t: t["n"])
        print(f"at N={top['n']} (largest sustained): latency p99 {top['p99_ms']:.1f} ms, agent CPU {top['cpu']:.0f}% "
              f"= {top['cpu'] * 10 / top['n']:.2f} ms of CPU per sensor-second, RSS {top['rss_mb']:.0f} MB; "
              f"worst p99 over the sustained loads {max(t['p99_ms'] for t in held):.1f} ms at the end of a run, "
              f"{max(t['p99_worst_ms'] for t in held):.1f} ms at any heartbeat (target <= 50)")
        if args.latency_budget:
            worst = max(held, key=lambda t: t["late"] or 0.0)
            print(f"whole runs: windows later than the budget ({args.latency_budget:g} ms) at most "
                  f"{worst['late']:.2%} (N={worst['n']}); the run's p99 is within the budget where <= 1 % "
                  f"({sum((t['late'] or 0) <= 0.01 for t in held)} of {len(held)} sustained loads)")
    at100 = [t for t in trials if t["n"] == 100]
    if at100:
        t = at100[0]
        print(f"at N=100: latency p50 {t['p50_ms']:.1f} ms p99 {t['p99_ms']:.1f} ms (target <= 50), "
              f"RSS {t['rss_mb']:.0f} MB (target <= 90)")
    print(f"load avg at the end {os.getloadavg()} (other work on this machine slows the agent and the limits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
