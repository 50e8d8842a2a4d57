"""One published report: edge throughput and latency, models, Flink, faults survived, soak.

``make report`` runs this. Each part is measured now, in a short mode, unless skipped
with its flag; a skipped part reuses the numbers of the last run that measured it (kept
in ``docs/report/report.json``) and the report says from when. Writes ``docs/report.md``
and PNGs under ``docs/report/``; every figure states how and on what machine (cores,
RAM, CPU model, load average at the time) it was measured.

Parts:

* ``edge``: ``benchmarks/edge_throughput.py`` functions in a short mode: ONNX Runtime and
  paho limits (2 s each), then the agent process fed by N simulated 12 kHz sensors for a
  short ladder (``--ladder``, ``--seconds`` each).
* ``models``: every ``models/zoo/*.onnx``: size (file), accuracy (its card: ``.json`` or,
  for ``cnn_small``, ``cnn_small.md``), latency per window measured now with ONNX Runtime
  (1 thread, batch 1 and 32) and its distribution.
* ``flink``: ``benchmarks/cloud_throughput.py`` spool mode with ``--flink-records`` records.
* ``reliability``: ``pytest tests/reliability`` (broker SIGKILL x4, outbox disk full,
  network cut, code-safety scan), then the counts they wrote under ``$EDGEVIB_ARTIFACTS``
  (default ``test-artifacts/``).
* ``security``: the MQTT security suite, the model-update tests (signatures, tampered and
  unsigned models, NaN rollback, canary halt), the dashboard's token tests and the
  code-safety scan, each with its pytest result.
* ``loop``: ``tests/cloud/test_closed_loop.py`` (real broker, agent and Flink job) and the
  numbers it writes: the promotion gate's accuracies and the time from trigger to the new
  model running on the agent.
* ``soak``: ``docs/report/soak.json`` from ``benchmarks/soak.py`` (30 min; not re-run unless
  ``--soak-minutes`` is given).

Usage: ``python benchmarks/report.py [--skip-edge] [--skip-models] [--skip-flink]
[--skip-reliability] [--soak-minutes N]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
OUT = REPO / "docs" / "report"
STATE = OUT / "report.json"
PARTS = ("edge", "models", "flink", "reliability", "security", "loop", "soak")
SECURITY_SUITES = (
    ("tests/security", "MQTT: TLS with a test CA, passwords, a per-gateway ACL (a gateway cannot publish as "
     "another or read another's models topic); plaintext and bad passwords refused"),
    ("tests/edge/integration/test_model_update.py", "model updates on a real broker and agent: tampered and unsigned "
     "models rejected while the old model keeps running; a NaN model rolled back; a canary with the wrong key "
     "halts the rollout"),
    ("tests/edge/test_updates.py", "the update format: Ed25519 signature, sha256, size and manifest checks, "
     "chunk assembly bounds, fuzzed garbage"),
    ("tests/cloud/test_dashboard.py", "dashboard/API: a token on every route (SSE included), bad tokens 401, "
     "constant-time compare, binds 127.0.0.1 by default"),
    ("tests/reliability/test_code_safety.py", "no module passes input to pickle, eval/exec, yaml.load or a shell "
     "(AST scan), ruff's S-rules stay on"),
)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def where(m: dict[str, Any]) -> str:
    return (f"{m['cores']} cores, {m['ram_gb']} GB RAM, {m['cpu']}; load avg {m['loadavg']} "
            f"at {m['time_utc']} UTC (shared machine)")


def bench(name: str) -> Any:
    """A module of benchmarks/ (not a package): imported by path."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


# -- parts ------------------------------------------------------------------------------
def part_edge(ladder: list[int], seconds: float) -> dict[str, Any]:
    et = bench("edge_throughput")
    from edgevib.edge.cli import model_path
    from edgevib.models.simulate import simulate

    from edgevib.broker import MosquittoProcess
    from edgevib.protocol.frames import Frame, encode

    model = model_path("")
    payload = encode(Frame(0, 0, et.FS, simulate("normal", duration_s=0.5)[:et.FRAME]), "int16")
    before = machine()
    onnx_ws = et.onnx_limit(model, 32, 1, seconds=2.0)
    trials = []
    with MosquittoProcess() as broker:
        paho_ms = et.paho_limit(broker.url, payload, seconds=2.0)
        for n in ladder:
            r = et.agent_trial(broker.url, model, n, seconds, 32, 1)
            r["loadavg_1m"] = round(os.getloadavg()[0], 2)
            trials.append(r)
            print(f"  edge N={n}: {'sustained' if r['ok'] else 'behind'} p99 {r['p99_ms']:.1f} ms "
                  f"CPU {r['cpu']:.0f}% RSS {r['rss_mb']:.0f} MB", flush=True)
    return {"model": model.name, "onnx_windows_s": onnx_ws, "onnx_sensors": onnx_ws / et.WIN_PER_SENSOR,
            "paho_msgs_s": paho_ms, "paho_sensors": paho_ms / et.FRAMES_PER_SENSOR, "trials": trials,
            "seconds_per_trial": seconds, "machine": before, "machine_end": machine()}


def _card_accuracy(zoo: Path, name: str) -> dict[str, Any]:
    js = zoo / f"{name}.json"
    if js.exists():
        d = json.loads(js.read_text())
        return {"acc_time": d["time_split"]["clean"]["accuracy"], "acc_load": d["load_split"]["clean"]["accuracy"],
                "test_windows": d["time_split"]["n_windows"], "source": f"models/zoo/{name}.json"}
    md = zoo / f"{name}.md"
    text = md.read_text() if md.exists() else ""
    m = re.search(r"time split ([\d.]+) %, load-3 hold-out ([\d.]+) %", text)
    if not m:
        return {"acc_time": None, "acc_load": None, "source": "no card"}
    return {"acc_time": float(m.group(1)) / 100, "acc_load": float(m.group(2)) / 100, "test_windows": None,
            "source": f"models/zoo/{name}.md"}


def part_models(calls: int) -> dict[str, Any]:
    from edgevib.edge.runtime import OnnxModel
    from edgevib.models.simulate import simulate

    zoo = REPO / "models" / "zoo"
    before = machine()
    rows = []
    x = simulate("IR", duration_s=33 * 2048 / 12000 + 0.1, seed=5)
    for path in sorted(zoo.glob("*.onnx")):
        m = OnnxModel(path, threads=1)
        w = m.meta.window
        b1 = x[:w].reshape(1, 1, w)
        b32 = np.stack([x[i * w:(i + 1) * w] for i in range(32)])[:, None, :]
        for _ in range(20):
            m.predict(b1)
        lat1 = []
        for _ in range(calls):
            t0 = time.perf_counter()
            m.predict(b1)
            lat1.append((time.perf_counter() - t0) * 1000)
        lat32 = []
        for _ in range(max(20, calls // 10)):
            t0 = time.perf_counter()
            m.predict(b32)
            lat32.append((time.perf_counter() - t0) * 1000 / 32)
        rows.append({"model": path.stem, "bytes": path.stat().st_size, **_card_accuracy(zoo, path.stem),
                     "ms_b1_p50": statistics.median(lat1), "ms_b1_p99": float(np.percentile(lat1, 99)),
                     "ms_b32_per_window_p50": statistics.median(lat32), "lat_b1_ms": [round(v, 4) for v in lat1]})
        print(f"  model {path.stem}: {path.stat().st_size} B, b1 p50 {rows[-1]['ms_b1_p50']:.3f} ms", flush=True)
    import onnxruntime

    return {"rows": rows, "calls": calls, "onnxruntime": onnxruntime.__version__, "machine": before}


def part_flink(records: int) -> dict[str, Any]:
    ct = bench("cloud_throughput")
    before = machine()
    t0 = time.monotonic()
    r = ct.bench_spool(records, max(1, records // 2000), 20, 0.5)
    r["wall_s"] = time.monotonic() - t0
    print(f"  flink: {r['events_per_s']:.0f} events/s over {r['seconds']:.1f} s", flush=True)
    return {**r, "machine": before, "machine_end": machine()}


def artifacts() -> Path:
    return Path(os.environ.get("EDGEVIB_ARTIFACTS", REPO / "test-artifacts")) / "reliability"


def part_reliability() -> dict[str, Any]:
    before = machine()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"],
                       cwd=REPO, capture_output=True, text=True)
    tail = [line for line in p.stdout.strip().splitlines() if line.strip()][-1:] or [""]
    res = read_reliability()
    return {**res, "pytest_rc": p.returncode, "pytest_summary": tail[0], "wall_s": round(time.monotonic() - t0, 1),
            "machine": before}


def read_reliability() -> dict[str, Any]:
    faults = {}
    for f in sorted(artifacts().glob("*.json")):
        faults[f.stem] = json.loads(f.read_text())
    src = artifacts()
    return {"faults": faults, "source": str(src.relative_to(REPO) if src.is_relative_to(REPO) else src)}


def _pytest(path: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider"],
                       cwd=REPO, capture_output=True, text=True)
    tail = [line for line in p.stdout.strip().splitlines() if line.strip()][-1:] or [""]
    return p.returncode, tail[0].strip("= ")


def part_security() -> dict[str, Any]:
    before = machine()
    rows = []
    for path, what in SECURITY_SUITES:
        rc, summary = _pytest(path)
        rows.append({"suite": path, "what": what, "rc": rc, "summary": summary})
    return {"suites": rows, "machine": before}


def part_loop() -> dict[str, Any]:
    """The closed-loop end-to-end test; its numbers come from the JSON it writes."""
    before = machine()
    rc, summary = _pytest("tests/cloud/test_closed_loop.py")
    f = artifacts().parent / "closed_loop.json"
    data = json.loads(f.read_text()) if f.exists() and rc == 0 else {}
    return {**data, "pytest_rc": rc, "pytest_summary": summary, "machine": before}


def part_soak(minutes: float, sensors: int) -> dict[str, Any]:
    if minutes > 0:
        subprocess.run([sys.executable, str(BENCH / "soak.py"), "--minutes", str(minutes), "--sensors", str(sensors),
                        "--out", str(OUT)], cwd=REPO, check=False)
    path = OUT / "soak.json"
    if not path.exists():
        return {"missing": f"{path} not found: run python benchmarks/soak.py --minutes 30"}
    d = json.loads(path.read_text())
    loads = [x["loadavg_1m"] for x in d.pop("samples", [])]
    d["loadavg_1m_range"] = [min(loads), max(loads)] if loads else None
    d["machine"] = d["machine_start"]
    return d


# -- figures ----------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _foot(fig: Any, text: str) -> None:
    fig.text(0.01, 0.005, text, fontsize=6.5, wrap=True)


def fig_edge(e: dict[str, Any]) -> list[str]:
    plt = _plt()
    t = e["trials"]
    ns = [r["n"] for r in t]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(ns, [r["frames_in"] / max(1, r["sent"]) * 100 for r in t], "o-", label="frames inferred / sent (%)")
    a1.plot(ns, [r["cpu"] for r in t], "s--", label="agent CPU (% of one core)")
    for r in t:
        a1.annotate("ok" if r["ok"] else "behind", (r["n"], 102), ha="center", fontsize=8,
                    color="green" if r["ok"] else "red")
    a1.set_xlabel("simulated 12 kHz sensors (N)")
    a1.set_ylim(0, 115)
    a1.set_title(f"agent throughput ({e['model']}); limits: ONNX {e['onnx_sensors']:.0f}, "
                 f"paho {e['paho_sensors']:.0f} sensors,\ndocs/agent.md quiet machine: 400 sustained", fontsize=9)
    a1.legend(fontsize=8, loc="lower left")
    a2.plot(ns, [r["p50_ms"] for r in t], "o-", label="p50")
    a2.plot(ns, [r["p99_ms"] for r in t], "s-", label="p99")
    a2.axhline(50, color="grey", ls=":", label="target p99 50 ms")
    a2.set_yscale("log")
    a2.set_xlabel("simulated 12 kHz sensors (N)")
    a2.set_ylabel("frame arrival -> alert decision (ms)")
    a2.set_title("latency (agent heartbeat percentiles)", fontsize=9)
    a2.legend(fontsize=8)
    _foot(fig, f"edge_throughput.py functions, {e['seconds_per_trial']:g} s per N, batch 32, 1 ORT thread, anomaly on; "
          + where(e["machine"]) + f"; end load {e['machine_end']['loadavg']}")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(OUT / "edge_throughput.png", dpi=110)
    plt.close(fig)
    return ["edge_throughput.png"]


def fig_models(m: dict[str, Any]) -> list[str]:
    plt = _plt()
    rows = m["rows"]
    names = [r["model"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    xs = np.arange(len(rows))
    axes[0].bar(xs - 0.2, [(r["acc_time"] or 0) * 100 for r in rows], 0.4, label="time split")
    axes[0].bar(xs + 0.2, [(r["acc_load"] or 0) * 100 for r in rows], 0.4, label="load hold-out")
    axes[0].set_ylim(90, 100.5)
    axes[0].set_title("accuracy (%) from the model cards", fontsize=9)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].bar(xs, [r["bytes"] / 1024 for r in rows])
    axes[1].set_title("ONNX file size (KiB)", fontsize=9)
    axes[2].bar(xs - 0.2, [r["ms_b1_p50"] for r in rows], 0.4, label="batch 1 (p50)")
    axes[2].bar(xs + 0.2, [r["ms_b32_per_window_p50"] for r in rows], 0.4, label="batch 32, per window (p50)")
    axes[2].set_title("ms per window, measured now", fontsize=9)
    axes[2].legend(fontsize=8)
    for a in axes:
        a.set_xticks(xs, names, fontsize=8)
    _foot(fig, f"onnxruntime {m['onnxruntime']} CPU, 1 thread, {m['calls']} batch-1 calls per model; "
          + where(m["machine"]))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(OUT / "models.png", dpi=110)
    plt.close(fig)
    fig, a = plt.subplots(figsize=(8, 3.6))
    for r in rows:
        a.hist(r["lat_b1_ms"], bins=np.logspace(-2, 2, 80), histtype="step", label=r["model"])
    a.set_xscale("log")
    a.set_yscale("log")  # the tail (preemption by other work on the shared cores) is the story
    a.set_xlabel("ms per call (batch 1)")
    a.set_ylabel("calls")
    a.set_title("model latency distribution, ONNX Runtime, batch 1", fontsize=9)
    a.legend(fontsize=8)
    _foot(fig, f"{m['calls']} calls per model after 20 warm-up calls; " + where(m["machine"]))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(OUT / "latency_models.png", dpi=110)
    plt.close(fig)
    return ["models.png", "latency_models.png"]


def fig_flink(f: dict[str, Any]) -> list[str]:
    plt = _plt()
    fig, a = plt.subplots(figsize=(6, 3.4))
    a.bar(["measured (spool)", "target"], [f["events_per_s"], 30000], color=["tab:blue", "lightgrey"])
    a.set_ylabel("events/s")
    a.set_title(f"Flink job: {f['records']} events ({f['alerts']} alerts) in {f['files']} spool files", fontsize=9)
    _foot(fig, "cloud_throughput.bench_spool: fresh local mini-cluster, rate = records / (last - first store "
          "write); " + where(f["machine"]))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(OUT / "flink.png", dpi=110)
    plt.close(fig)
    return ["flink.png"]


def fig_faults(r: dict[str, Any]) -> list[str]:
    plt = _plt()
    faults = r["faults"]
    if not faults:
        return []
    keys = [("alerts_published", "published (agent count)"), ("alerts_delivered_distinct", "delivered (distinct ids)"),
            ("alerts_stored_bridge_spool", "stored (cloud bridge spool)"),
            ("alerts_acked_via_outbox", "acked via outbox"), ("outbox_write_failed", "outbox write failed")]
    names = list(faults)
    fig, a = plt.subplots(figsize=(9, 3.8))
    xs = np.arange(len(names))
    for i, (k, label) in enumerate(keys):
        bars = a.bar(xs + (i - 2) * 0.16, [faults[n].get(k, 0) for n in names], 0.16, label=label)
        a.bar_label(bars, fontsize=7)
    a.set_xticks(xs, names)
    a.set_ylabel("alerts")
    a.set_title("faults survived: alerts counted at the agent, the subscriber and the cloud bridge", fontsize=9)
    a.legend(fontsize=8)
    first = faults[names[0]]
    m = r.get("machine") or {**machine(), "loadavg": first.get("loadavg"), "time_utc": first.get("time_utc")}
    _foot(fig, f"tests/reliability: private Mosquitto, agent process, subscriber, cloud bridge; counts from {r['source']}; "
          + where(m))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(OUT / "faults.png", dpi=110)
    plt.close(fig)
    return ["faults.png"]


# -- the markdown -------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def write_md(state: dict[str, Any], measured_now: set[str]) -> str:
    now = machine()
    lines = ["# edgevib: measured report", "",
             f"Written by `make report` (`benchmarks/report.py`) at {now['time_utc']} UTC on {where(now)}.",
             "The machine is a **shared 2-core development VM** (other sessions' tests and training ran on it "
             "during some of these measurements): every number below carries the load average at the time it "
             "was taken; under load, throughput and latency understate a quiet gateway. Speed numbers belong "
             "here, not in tests.", "",
             "| part | measured | source |", "|---|---|---|"]
    for p in PARTS:
        s = state.get(p)
        if s is None:
            lines.append(f"| {p} | never | not measured yet |")
            continue
        how = "this run" if p in measured_now else f"**reused** from the report run of {s['measured_utc']}"
        if p == "soak":
            how = "the last `benchmarks/soak.py` run (docs/report/soak.json; not re-run by `make report`)"
        if p == "reliability" and p not in measured_now:
            how = "**reused**: counts from the JSON test artifacts (times per fault below)"
        lines.append(f"| {p} | {s['measured_utc']} | {how} |")
    lines.append("")

    e = state.get("edge", {}).get("data")
    lines += ["## Edge throughput and latency", ""]
    if e:
        lines += ["![edge throughput](report/edge_throughput.png)", "",
                  f"Model `{e['model']}`, anomaly scoring on, batch 32, 1 ONNX Runtime thread; each N is "
                  f"`edgevib agent` as its own process fed by a publisher process with N simulated 12 kHz sensors "
                  f"for {e['seconds_per_trial']:g} s (short mode of `benchmarks/edge_throughput.py`). Limits: "
                  f"ONNX Runtime {e['onnx_windows_s']:.0f} windows/s = {e['onnx_sensors']:.0f} sensors; paho QoS 0 "
                  f"{e['paho_msgs_s']:.0f} msgs/s = {e['paho_sensors']:.0f} sensors. Measured on {where(e['machine'])}.",
                  "", "| N | sustained | sent | inferred | drops | p50 ms | p99 ms | CPU % | RSS MB | load 1 min |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in e["trials"]:
            lines.append(f"| {r['n']} | {'yes' if r['ok'] else 'no'} | {r['sent']} | {r['frames_in']} | {r['drops']} | "
                         f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu']:.0f} | {r['rss_mb']:.0f} | "
                         f"{r.get('loadavg_1m', '-')} |")
        lines += ["", "The full ladder and bisection on a quiet machine (400 sensors sustained with `cnn_small`, "
                  "p99 21-27 ms, RSS 152 MB at 100) is in [agent.md](agent.md#throughput-benchmark).", ""]
    m = state.get("models", {}).get("data")
    lines += ["## Models: accuracy, size, latency", ""]
    if m:
        lines += ["![models](report/models.png)", "", "![latency distribution](report/latency_models.png)", "",
                  f"Latency measured now with onnxruntime {m['onnxruntime']} (CPU, 1 thread, {m['calls']} batch-1 "
                  f"calls, 20 warm-up) on {where(m['machine'])}. Accuracy is read from each model's card (CWRU drive "
                  "end 12 kHz; time split = the last 30 % of each recording, load hold-out = load 3); the cards' "
                  "test sets differ (`cnn`/`nsae_lcn` json: all 39 recordings; `cnn_small`: the compression "
                  "table's 484 windows), so compare within a column with care.", "",
                  "| model | bytes | time split | load hold-out | ms b1 p50 | ms b1 p99 | ms/window b32 | accuracy from |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            lines.append(f"| {r['model']} | {r['bytes']:,} | {_pct(r['acc_time'])} | {_pct(r['acc_load'])} | "
                         f"{r['ms_b1_p50']:.3f} | {r['ms_b1_p99']:.3f} | {r['ms_b32_per_window_p50']:.3f} | "
                         f"{r['source']} |")
        lines.append("")
    f = state.get("flink", {}).get("data")
    lines += ["## Cloud: events/s through the Flink job", ""]
    if f:
        lines += ["![flink](report/flink.png)", "",
                  f"`benchmarks/cloud_throughput.py` spool mode, short: {f['records']} records ({f['alerts']} alerts, "
                  f"the rest heartbeats) in {f['files']} spool files read by a fresh job in a local mini-cluster: "
                  f"**{f['events_per_s']:.0f} events/s** over {f['seconds']:.1f} s of store writes (first write "
                  f"{f['first_store_after_s']:.1f} s after the job started; whole part {f['wall_s']:.0f} s). "
                  f"Target 30,000 events/s. Measured on {where(f['machine'])}. A short run includes more of the "
                  "job's warm-up per record than the 100k-record runs in [cloud.md](cloud.md).", ""]
    r = state.get("reliability", {}).get("data")
    lines += ["## Faults survived", ""]
    if r:
        if r.get("pytest_rc") not in (0, None):
            lines += [f"**The reliability suite failed in this run** (pytest exit {r['pytest_rc']}): rows where "
                      "delivered differs from published lost an alert; see reliability.md, 'One loss seen, and the fix'.", ""]
        lines += ["![faults](report/faults.png)", "",
                  f"`pytest tests/reliability` ({r.get('pytest_summary', 'not run by this report')}; "
                  f"{r.get('wall_s', '-')} s). What each test does: [reliability.md](reliability.md).", "",
                  "| fault | published (agent) | received | delivered (distinct) | stored (bridge spool) | via outbox "
                  "| outbox write failed | outbox empty at end | agent alive | taken at (UTC, load) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, c in r["faults"].items():
            loss = " **(loss)**" if (c.get("alerts_delivered_distinct") != c.get("alerts_published")
                                     or c.get("alerts_stored_bridge_spool", c.get("alerts_published"))
                                     != c.get("alerts_published")) else ""
            lines.append(f"| {name}{loss} | {c.get('alerts_published')} | {c.get('alerts_received_raw')} | "
                         f"{c.get('alerts_delivered_distinct')} | {c.get('alerts_stored_bridge_spool', '-')} | "
                         f"{c.get('alerts_acked_via_outbox')} | "
                         f"{c.get('outbox_write_failed', 0)} | {c.get('outbox_pending_end') == 0} | "
                         f"{c.get('agent_alive')} | {c.get('time_utc')}, {c.get('loadavg')} |")
        lines += ["", "Stored = distinct alert ids in the spool files of the cloud's MQTT bridge (persistent MQTT 5 "
                  "session; a batch is acknowledged to the broker only after it is fsynced), which is what the Flink "
                  "job reads.", "", "Flink job SIGKILLed (client, JVM and Python workers) and restored from its last checkpoint: "
                  "covered by `tests/cloud/test_pipeline.py::test_kill_and_restart_from_checkpoint_loses_and_doubles_"
                  "nothing` (stored alerts = distinct alerts published, per-asset and per-site window counts equal "
                  "the test's own count); not re-run by this report (it needs its own 1-2 min mini-cluster).", ""]
    sec = state.get("security", {}).get("data")
    lines += ["## Security", ""]
    if sec:
        lines += [f"Suites run by this report ({where(sec['machine'])}):", "",
                  "| suite | what it shows | result |", "|---|---|---|"]
        lines += [f"| `{r['suite']}` | {r['what']} | {'**FAILED**: ' if r['rc'] else ''}{r['summary']} |"
                  for r in sec["suites"]]
        lines += ["", "Details: [security.md](security.md), [updates.md](updates.md), [dashboard.md](dashboard.md).", ""]
    lp = state.get("loop", {}).get("data")
    lines += ["## Closed loop: missed fault -> retrained model on the agent", ""]
    if lp and lp.get("pytest_rc") == 0 and "gate" in lp:
        g = lp["gate"]
        lines += [f"`tests/cloud/test_closed_loop.py` ({lp['pytest_summary']}; real Mosquitto, agent process and "
                  f"Flink job; {where(lp['machine'])}): an NSAE-LCN trained without outer-race data missed a replayed "
                  f"`OR021` recording (raised `{lp['missed_as']}`); {lp['evidence_windows']} evidence windows were "
                  "uploaded and labelled; the job triggered a retrain; the gate compared:", "",
                  "| set | running model | candidate |", "|---|---|---|",
                  f"| fixed held-out ({g['n_holdout']} windows; tolerance {g['tolerance_pt']:g} pt) | "
                  f"{g['old_holdout']:.2f} % | {g['new_holdout']:.2f} % |",
                  f"| new data held out by time ({g['n_new_eval']} windows; min gain {g['min_gain_pt']:g} pt) | "
                  f"{g['old_new']:.2f} % | {g['new_new']:.2f} % |", "",
                  f"Promoted, signed, pushed; the agent then raised `{lp['after_update']}` on the same recording. "
                  f"**Trigger to new model running: {lp['trigger_to_running_s']:.1f} s** (target < 120 s); "
                  f"of which training {lp['worker_seconds'].get('train', 0):.1f} s. Details: "
                  "[closed_loop.md](closed_loop.md).", ""]
    elif lp:
        lines += [f"**The closed-loop test failed in this run** ({lp.get('pytest_summary')}).", ""]
    s = state.get("soak", {}).get("data")
    lines += ["## Memory over time (soak)", ""]
    if s and "missing" not in s:
        ld = s["load"]
        lines += ["![soak](report/soak.png)", "",
                  f"`benchmarks/soak.py --minutes {s['minutes']:g} --sensors {ld['sensors']}`: {ld['sensors']} "
                  f"simulated sensors at 12 kHz ({ld['frames_per_s']} frames/s, {ld['windows_per_s']} windows/s; "
                  f"each sensor faulty one {ld['fault_period_s']:g} s period in four, so alerts are raised and "
                  f"cleared throughout), model `{ld['model']}`, anomaly on. Rated load: {ld['sensors']} sensors "
                  f"= {ld['sensors'] / 400:.0%} of the 400 sensors docs/agent.md measured sustained on a quiet "
                  f"machine (agent mean CPU {s['cpu_percent_mean']} % of one core).", "",
                  f"* RSS {s['rss_warm_mb']} MB at the end of warm-up ({s['warmup_min']:g} min) -> {s['rss_end_mb']} MB "
                  f"at the end (medians over {s['rss_median_window_s']:g} s): **{s['rss_growth_percent']:+.2f} %, "
                  f"{s['verdict']}** (criterion < 5 %).",
                  f"* frames sent {s['frames_sent']}, inferred {s['frames_in']}, drops {s['drops']}; alerts sent "
                  f"{s['alerts_sent']}, acked {s['alerts_acked']}, received (distinct) {s['alerts_received_distinct']}; "
                  f"outbox depth max {s['outbox_pending_max']}, at the end {s['outbox_pending_end']}; inbox depth max "
                  f"{s['queue_depth_max']}.",
                  f"* {where(s['machine_start'])}; load avg at the end {s['machine_end']['loadavg']}; 1-minute "
                  f"load average during the run {s.get('loadavg_1m_range')} (min, max over the samples; other "
                  "work on the machine shows up there).", ""]
    elif s:
        lines += [s["missing"], ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for p in ("edge", "models", "flink", "reliability", "security", "loop"):
        ap.add_argument(f"--skip-{p}", action="store_true", help=f"reuse the last {p} numbers")
    ap.add_argument("--ladder", default="25,100,200", help="sensors per agent trial (short mode)")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds per agent trial")
    ap.add_argument("--model-calls", type=int, default=2000)
    ap.add_argument("--flink-records", type=int, default=50000)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="run the soak for N minutes (0: reuse soak.json)")
    ap.add_argument("--soak-sensors", type=int, default=50)
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite report.md and the figures from docs/report/report.json")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = json.loads(STATE.read_text()) if STATE.exists() else {}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "edge": lambda: part_edge([int(v) for v in args.ladder.split(",")], args.seconds),
        "models": lambda: part_models(args.model_calls),
        "flink": lambda: part_flink(args.flink_records),
        "reliability": part_reliability,
        "security": part_security,
        "loop": part_loop,
        "soak": lambda: part_soak(args.soak_minutes, args.soak_sensors),
    }
    measured: set[str] = set(state.get("_measured_in_last_run", [])) if args.render_only else set()
    failed: list[str] = []
    for p in PARTS:
        if args.render_only:
            continue
        if getattr(args, f"skip_{p}", False):
            if p == "reliability" and p not in state:  # the JSON artifacts may exist from a test run
                data = read_reliability()
                state[p] = {"measured_utc": "test artifacts", "data": data}
            print(f"{p}: skipped, reusing {state.get(p, {}).get('measured_utc', 'nothing')}", flush=True)
            continue
        print(f"{p}: measuring ...", flush=True)
        try:
            data = runs[p]()
        except Exception as exc:  # one broken part must not lose the others' numbers
            print(f"{p}: FAILED ({type(exc).__name__}: {exc}); keeping the last numbers", file=sys.stderr)
            failed.append(p)
            continue
        if "missing" in data:
            print(f"{p}: {data['missing']}", file=sys.stderr)
            continue
        stamp = (data.get("machine", {}).get("time_utc") or machine()["time_utc"]) + " UTC"
        state[p] = {"measured_utc": stamp, "data": data}
        if p != "soak" or args.soak_minutes > 0:
            measured.add(p)
    figs: dict[str, Callable[[dict[str, Any]], list[str]]] = {
        "edge": fig_edge, "models": fig_models, "flink": fig_flink, "reliability": fig_faults}
    for p, fn in figs.items():
        if isinstance(state.get(p), dict):
            fn(state[p]["data"])
    state["_measured_in_last_run"] = sorted(measured)
    STATE.write_text(json.dumps(state, indent=1, default=str) + "\n")
    (REPO / "docs" / "report.md").write_text(write_md(state, measured))
    print(f"wrote docs/report.md and {OUT}/*.png; measured now: {sorted(measured)}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
