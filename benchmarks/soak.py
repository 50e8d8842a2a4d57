"""Soak: one agent under a steady rated load for a long time; does its memory grow?

Runs a private Mosquitto, ``edgevib agent`` as its own process (default model, anomaly
scoring on) and a publisher process with N simulated 12 kHz sensors in real time
(4096-sample int16 frames, staggered phases). Every sensor switches between healthy and
an inner-race fault on a fixed schedule (faulty one period in four, phases staggered), so
alerts are raised and cleared all through the run and the outbox is exercised.

Every ``--sample`` seconds it records the agent's RSS (psutil, from outside), CPU %, and
from the agent's heartbeat its outbox depth, inbox depth, frames, alerts sent/acked and
drops. Writes ``soak.json`` and ``soak.png`` (RSS, outbox depth, inbox depth over time)
to ``--out`` and prints a verdict: RSS growth from the end of warm-up to the end < 5 %
(medians of the samples in the minute ending there, so one GC bump does not decide it).

Not a test (``make test`` does not run it). Usage::

    python benchmarks/soak.py --minutes 30 --sensors 50 --out docs/report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
from edgevib.edge.cli import model_path
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess, parse_url
from edgevib.protocol.frames import Frame, encode

FS, FRAME = 12000.0, 4096
T = proto.Topics("soak", "gw")
BASE_S = 20.0  # seconds of simulated signal per kind, looped (memory: 2 x 240k float32)


def _client(cid: str) -> paho.Client:
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid)


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model and load average now: every number says where it was taken."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
            "loadavg": [round(v, 2) for v in os.getloadavg()], "host": platform.node(),
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def sensors(url: str, n: int, seconds: float, period_s: float) -> None:
    """Publisher role: n sensors in real time; sensor i is faulty when (block + i) % 4 == 0."""
    host, port, _ = parse_url(url)
    c = _client("soak-sensors")
    c.connect(host, port)
    c.loop_start()
    base = {f: simulate(f, duration_s=BASE_S, seed=i) for i, f in enumerate(("normal", "IR"))}
    length = len(base["normal"]) - len(base["normal"]) % FRAME
    topics = [T.raw(f"s{i}") for i in range(n)]
    t0_ns, start, period = time.time_ns(), time.monotonic(), FRAME / FS
    sent = 0
    for k in range(int(seconds / period)):
        block = int(k * period // period_s)
        for i, topic in enumerate(topics):
            ahead = start + (k + i / n) * period - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            kind = "IR" if (block + i) % 4 == 0 else "normal"
            off = (k * FRAME + i * 97 * 41) % (length - FRAME)  # sensors differ
            x = base[kind][off:off + FRAME]
            c.publish(topic, encode(Frame(k, t0_ns + round(k * FRAME * 1e9 / FS), FS, x), "int16"), qos=0)
            sent += 1
    time.sleep(0.5)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"sent": sent}), flush=True)


def _median_window(samples: list[dict[str, Any]], t_end: float, width: float, key: str) -> float:
    vals = [s[key] for s in samples if t_end - width <= s["t"] <= t_end]
    return float(statistics.median(vals)) if vals else float("nan")


def soak(minutes: float, n: int, warmup_min: float, sample_s: float, period_s: float,
         model: Path) -> dict[str, Any]:
    seconds = minutes * 60
    before = machine()
    hbs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    with MosquittoProcess() as broker, tempfile.TemporaryDirectory(prefix="edgevib-soak-") as tmp:
        host, port, _ = parse_url(broker.url)
        sub = _client("soak-cloud")
        alert_ids: set[str] = set()
        lock = threading.Lock()

        def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
            with lock:
                if m.topic == T.heartbeat:
                    hbs.append(json.loads(m.payload))
                elif m.topic == T.alerts:
                    alert_ids.add(str(json.loads(m.payload)["id"]))

        sub.on_message = on_message
        sub.on_connect = lambda c, *a: (c.subscribe(T.heartbeat, 0), c.subscribe(T.alerts, 1))
        sub.connect(host, port)
        sub.loop_start()
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", broker.url, "--site", "soak",
             "--gateway", "gw", "--model", str(model), "--outbox", f"{tmp}/ob.sqlite", "--heartbeat", "2"],
            env={**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIB_ALERT__COOLDOWN_S": "0"})
        try:
            end = time.monotonic() + 60
            while not hbs and time.monotonic() < end:
                time.sleep(0.1)
            if not hbs:
                raise RuntimeError("soak: the agent sent no heartbeat within 60 s; run it by hand to see why")
            proc = psutil.Process(agent.pid)
            proc.cpu_percent(None)
            pub = subprocess.Popen([sys.executable, __file__, "--role", "sensors", "--url", broker.url,
                                    "--sensors", str(n), "--seconds", str(seconds), "--period", str(period_s)],
                                   stdout=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            while pub.poll() is None:
                time.sleep(sample_s)
                with lock:
                    hb = hbs[-1]
                c = hb["counters"]
                samples.append({
                    "t": round(time.monotonic() - t0, 1), "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                    "cpu_percent": proc.cpu_percent(None), "outbox_pending": hb.get("outbox_pending", 0),
                    "queue_depth": c.get("queue_depth", 0), "frames_in": c.get("frames_in", 0),
                    "windows": c.get("windows", 0), "alerts_sent": c.get("alerts_sent", 0),
                    "alerts_acked": c.get("alerts_acked", 0), "latency_p99_ms": c.get("latency_p99_ms", 0.0),
                    "drops": sum(hb.get("drops", {}).values()), "loadavg_1m": round(os.getloadavg()[0], 2)})
                if agent.poll() is not None:
                    raise RuntimeError(f"soak: the agent exited with {agent.returncode} during the run")
            out = (pub.stdout.read() if pub.stdout else "").strip().splitlines()
            sent = json.loads(out[-1])["sent"] if out else -1
            time.sleep(4.5)  # two heartbeats: the last frames inferred, the last alerts acked
            with lock:
                last = hbs[-1]
                n_alerts = len(alert_ids)
        finally:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
            sub.loop_stop()
            sub.disconnect()
    warm_end = warmup_min * 60
    width = min(60.0, max(2 * sample_s, seconds / 10))
    rss_warm = _median_window(samples, warm_end, width, "rss_mb")
    rss_end = _median_window(samples, samples[-1]["t"], width, "rss_mb") if samples else float("nan")
    growth = (rss_end - rss_warm) / rss_warm * 100
    lc = last["counters"]
    result = {
        "load": {"sensors": n, "fs_hz": FS, "frame_samples": FRAME, "frames_per_s": round(n * FS / FRAME, 1),
                 "windows_per_s": round(n * FS / 1024, 1), "fault_period_s": period_s,
                 "model": model.name, "anomaly": True},
        "minutes": minutes, "warmup_min": warmup_min, "sample_s": sample_s,
        "machine_start": before, "machine_end": machine(),
        "frames_sent": sent, "frames_in": lc.get("frames_in", 0), "drops": sum(last.get("drops", {}).values()),
        "alerts_sent": lc.get("alerts_sent", 0), "alerts_acked": lc.get("alerts_acked", 0),
        "alerts_received_distinct": n_alerts, "outbox_pending_end": last.get("outbox_pending", 0),
        "outbox_pending_max": max((s["outbox_pending"] for s in samples), default=0),
        "queue_depth_max": max((s["queue_depth"] for s in samples), default=0),
        "cpu_percent_mean": round(statistics.mean(s["cpu_percent"] for s in samples), 1) if samples else 0,
        "rss_warm_mb": round(rss_warm, 2), "rss_end_mb": round(rss_end, 2), "rss_growth_percent": round(growth, 2),
        "rss_median_window_s": width, "verdict": "pass" if growth < 5.0 else "fail",
        "samples": samples,
    }
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = [x["t"] / 60 for x in s]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t, [x["rss_mb"] for x in s], label="agent RSS (MB)")
    a1.axvline(result["warmup_min"], color="grey", ls="--", label="end of warm-up")
    a1.set_ylabel("RSS (MB)")
    a1.set_title(f"soak: {result['load']['sensors']} sensors x 12 kHz, {result['minutes']:g} min, "
                 f"RSS growth {result['rss_growth_percent']:+.1f} % ({result['verdict']})", fontsize=10)
    a1.legend(loc="lower right", fontsize=8)
    a2.plot(t, [x["outbox_pending"] for x in s], label="outbox depth (rows)")
    a2.plot(t, [x["queue_depth"] for x in s], label="inbox depth (messages)", alpha=0.7)
    a2.set_xlabel("minutes")
    a2.set_ylabel("depth")
    a2.legend(loc="upper right", fontsize=8)
    m = result["machine_start"]
    fig.text(0.01, 0.005, f"agent RSS via psutil every {result['sample_s']:g} s, depths from heartbeats; "
             f"{m['cores']} cores, {m['ram_gb']} GB, {m['cpu']}; load avg at start {m['loadavg']}, "
             f"end {result['machine_end']['loadavg']} (shared machine)", fontsize=6.5)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("main", "sensors"), default="main")
    ap.add_argument("--url", default="")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=0.0, help="(sensors role) how long to publish")
    ap.add_argument("--sensors", type=int, default=50,
                    help="simulated 12 kHz sensors (docs/agent.md: 400 sustained on a quiet 2-core machine)")
    ap.add_argument("--warmup", type=float, default=None, help="minutes of warm-up (default: 10 %% of the run, "
                    "at least 1 min when the run is 5 min or longer)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--period", type=float, default=60.0, help="seconds each sensor stays healthy or faulty")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/report"))
    args = ap.parse_args()
    if args.role == "sensors":
        sensors(args.url, args.sensors, args.seconds, args.period)
        return 0
    warmup = args.warmup if args.warmup is not None else max(args.minutes / 10, 1.0 if args.minutes >= 5 else 0)
    if args.minutes < 1 / 6 or warmup >= args.minutes:
        print(f"soak: --minutes {args.minutes} with warm-up {warmup} min leaves nothing to measure; "
              "use --minutes 1 or more", file=sys.stderr)
        return 2
    res = soak(args.minutes, args.sensors, warmup, args.sample, args.period, args.model or model_path(""))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, args.out / "soak.png")
    print(f"soak {res['minutes']:g} min, {args.sensors} sensors: frames sent {res['frames_sent']} in "
          f"{res['frames_in']}, drops {res['drops']}, alerts sent {res['alerts_sent']} acked {res['alerts_acked']} "
          f"received {res['alerts_received_distinct']}, outbox max {res['outbox_pending_max']}, "
          f"RSS {res['rss_warm_mb']:.1f} -> {res['rss_end_mb']:.1f} MB ({res['rss_growth_percent']:+.2f} %): "
          f"{res['verdict']}")
    return 0 if res["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
