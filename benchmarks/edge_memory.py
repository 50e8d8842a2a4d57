"""Edge agent footprint: where the RSS goes, bytes per sensor, import + model load, start-up.

Each row of the memory table is a fresh subprocess that runs the steps up to that row and
then waits; the parent reads its RSS with psutil, so a row's delta is what that step adds
on top of the rows above it (shared pages included, as RSS counts them):

    interpreter -> numpy -> onnxruntime -> model session (+ batches of 1..32) -> paho-mqtt
    -> psutil -> the agent's own modules -> SQLite outbox -> agent with N sensors fed 8 s of
    12 kHz signal through the in-memory link (windows, history, alerting, anomaly, metrics;
    the int16 frames' signals are simulated in a child process, so the simulator is not counted)

Also: the RSS in-process feeds reach, as the agent's heartbeat reports it (``--feeds``),
ONNX Runtime memory options at N sensors (RSS and windows/s of a batch-32 loop),
bytes per sensor by allocation site (tracemalloc), import + model load time, and agent start
to first heartbeat / first inference (``edgevib agent`` as its own process on a private
Mosquitto). A report, not a test:
``python benchmarks/edge_memory.py [--model M] [--sensors 100,1000] [--no-startup]``.
To measure an edge-only install (no scipy, which the signal simulator needs), run it with that
venv's python and ``EDGE_MEMORY_SIM_PYTHON=.venv/bin/python`` (the feeder's interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil

FS, FRAME = 12000.0, 4096

# Child code per step; each step's code runs after all the steps above it.
STEPS: list[tuple[str, str]] = [
    ("interpreter (python, stdlib)", ""),
    ("numpy", "import numpy as np"),
    ("onnxruntime import", "import onnxruntime"),
    ("model session + batches 1..32", """
        from edgevib.edge.runtime import OnnxModel
        from edgevib.models.bearing import CWRU_DE_6205
        from edgevib.models.orders import fault_frequencies
        model = OnnxModel(MODEL, threads=1, **ORT)
        _fhz = fault_frequencies(CWRU_DE_6205, 1797.0)
        # a deterministic signal, not numpy.random: the agent never imports it (~2-3 MB of RSS)
        _sig = np.sin(np.arange(32 * model.meta.window) * 0.37).astype(np.float32).reshape(32, 1, -1)
        for _b in list(range(1, 33)) * 2:
            model.predict(_sig[:_b], [_fhz] * _b)
    """),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("psutil", "import psutil"),
    ("agent modules (edgevib.edge.*, CLI)", """
        import edgevib.edge.agent, edgevib.edge.mqtt, edgevib.edge.cli
        from edgevib.cli import build_parser
        build_parser("agent")
    """),
    ("SQLite outbox (WAL, 100 rows put+acked)", """
        import tempfile
        from edgevib.edge.outbox import Outbox
        _tmp = tempfile.mkdtemp()
        outbox = Outbox(_tmp + "/ob.sqlite")
        for _i in range(100):
            outbox.ack(outbox.put("t", b"x" * 2000, qos=1))
    """),
    ("agent + N sensors x 8 s (state, metrics)", """
        feed_agent(outbox, model, SENSORS, 8.0)
    """),
]

FEED = """
def _signals(seconds):
    # The simulated signals come from a child process: the simulator and numpy.random (~3.4 MB of
    # RSS) are the feeder's, not the agent's, and must not count in the agent's process.
    import os, subprocess, sys
    import numpy as np
    # an edge-only venv has no simulator deps (scipy): EDGE_MEMORY_SIM_PYTHON names another interpreter
    py = os.environ.get("EDGE_MEMORY_SIM_PYTHON", sys.executable)
    code = ("import sys, numpy as np; from edgevib.models.simulate import simulate; "
            "sys.stdout.buffer.write(np.stack([simulate(f, duration_s=float(sys.argv[1]), seed=i) "
            "for i, f in enumerate(('normal', 'IR'))]).astype('<f4').tobytes())")
    raw = subprocess.run([py, "-c", code, str(seconds)], capture_output=True, check=True).stdout
    normal, ir = np.frombuffer(raw, "<f4").reshape(2, -1)
    return {"normal": normal, "IR": ir}

def feed_agent(outbox, model, n, seconds, trace=False, indicators=True):
    import numpy as np
    from edgevib.edge.agent import Agent
    from edgevib.edge.config import load_agent_config
    from edgevib.protocol.frames import Frame, encode
    from edgevib.edge.memory import MemoryBus, MemoryLink
    from edgevib.protocol import Topics
    cfg = load_agent_config(None, env={}, site="mem", gateway="gw", heartbeat_s=3600,
                            outbox={"path": outbox.path if hasattr(outbox, "path") else ":memory:"},
                            indicators={"enabled": indicators})
    bus, now = MemoryBus(), [0.0]
    clock = lambda: now[0]  # noqa: E731 - agent time = signal time, as with real-time sensors
    agent = Agent(cfg, model, MemoryLink(bus, "agent", inbox_size=100_000, clock=clock), outbox, clock=clock)
    pub = MemoryLink(bus, "sensors")
    topics = Topics("mem", "gw")
    base = _signals(seconds + 1)
    frames = int(seconds * 12000.0 / 4096)
    for k in range(frames):
        for i in range(n):
            x = np.roll(base["IR" if i % 4 == 0 else "normal"], -i * 97)[k * 4096:(k + 1) * 4096]
            pub.publish(topics.raw(f"s{i}"), encode(Frame(k, k * 341_333_333, 12000.0, x), "int16"))
        now[0] += 4096 / 12000.0  # one frame period per round: time-based work (speed estimates) as in real time
        while agent.link.stats()["depth"] or agent._pending:
            agent.step()
    agent.flush(0.1)
    return agent
"""

CHILD = """
import json, os, sys, time
T0 = time.perf_counter()
MODEL, SENSORS, ORT = {model!r}, {sensors!r}, {ort!r}
{feed}
{body}
print("READY " + json.dumps({{"t": time.perf_counter() - T0}}), flush=True)
sys.stdin.readline()
"""


def _child_rss(body: str, model: str, sensors: int, ort: dict[str, bool]) -> tuple[float, dict[str, Any]]:
    """Run ``body`` in a fresh interpreter; its RSS (MB) once done, and what it printed after READY
    (plus ``file_mb``: the part of the RSS that is file-backed, i.e. shared-library code and data)."""
    code = CHILD.format(model=model, sensors=sensors, ort=ort, feed=FEED, body=body)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    line = p.stdout.readline()
    while line and not line.startswith("READY "):
        line = p.stdout.readline()
    if not line:
        p.wait(10)
        raise RuntimeError(f"child failed (rc {p.returncode})")
    mi = psutil.Process(p.pid).memory_info()
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(30)
    return mi.rss / 2**20, {**json.loads(line[6:]), "file_mb": getattr(mi, "shared", 0) / 2**20}


def _steps_upto(k: int) -> str:
    return "\n".join(textwrap.dedent(code) for _, code in STEPS[: k + 1])


def memory_table(model: str, sensors: int, ort: dict[str, bool]) -> list[tuple[str, float, float, float, float]]:
    """(step, RSS MB, delta MB, delta of the file-backed part MB, file-backed MB) per step."""
    rows, prev, prev_file = [], 0.0, 0.0
    for k, (name, _) in enumerate(STEPS):
        rss, info = _child_rss(_steps_upto(k), model, sensors, ort)
        rows.append((name.replace("N sensors", f"{sensors} sensors"), rss, rss - prev, info["file_mb"] - prev_file,
                     info["file_mb"]))
        prev, prev_file = rss, info["file_mb"]
    return rows


def scipy_reference() -> list[tuple[str, float]]:
    """What the scipy modules the agent used to import would add on top of numpy."""
    base, _ = _child_rss("import numpy", "", 0, {})
    out = []
    for mod in ("scipy.fft", "scipy.signal"):
        try:
            rss, _ = _child_rss(f"import numpy\nimport {mod}", "", 0, {})
        except RuntimeError:
            continue
        out.append((mod, rss - base))
    return out


def ort_options(model: str, sensors: int) -> list[dict[str, Any]]:
    """RSS of the full agent at ``sensors`` and batch-32 speed, per ONNX Runtime memory option."""
    speed = """
        _x = np.random.default_rng(1).normal(size=(32, 1, model.meta.window)).astype(np.float32)
        _c = [_fhz] * 32
        _best = 0.0
        for _rep in range(3):
            _t, _n = time.perf_counter(), 0
            while time.perf_counter() - _t < 1.0:
                model.predict(_x, _c)
                _n += 32
            _best = max(_best, _n / (time.perf_counter() - _t))
        print("READY " + json.dumps({"t": 0, "win_s": _best}), flush=True)
    """
    out = []
    for arena, pattern in ((True, True), (True, False), (False, True), (False, False)):
        ort = {"memory_arena": arena, "mem_pattern": pattern}
        rss, _ = _child_rss(_steps_upto(len(STEPS) - 1), model, sensors, ort)
        _, sp = _child_rss(_steps_upto(3) + "\n" + textwrap.dedent(speed), model, 0, ort)
        out.append({"arena": arena, "mem_pattern": pattern, "rss_mb": rss, "win_s": sp["win_s"]})
    return out


def sensor_bytes(model: str, sensors: int) -> tuple[float, dict[str, float]]:
    """Python-heap bytes per sensor after feeding (tracemalloc), by allocation site."""
    body = _steps_upto(len(STEPS) - 2) + textwrap.dedent("""
        import tracemalloc
        tracemalloc.start(1)
        _s0 = tracemalloc.take_snapshot()
        _agent = feed_agent(outbox, model, SENSORS, 8.0)
        _s1 = tracemalloc.take_snapshot()
        _by = {}
        for _st in _s1.compare_to(_s0, "filename"):
            _f = _st.traceback[0].filename
            _key = _f.split("/edge/")[-1] if "/edge/" in _f else ("numpy" if "numpy" in _f else "other")
            _by[_key] = _by.get(_key, 0) + _st.size_diff
        print("READY " + json.dumps({"t": 0, "by": _by}), flush=True)
    """)
    _, info = _child_rss(body, model, sensors, {})
    by = {k: v / sensors for k, v in sorted(info["by"].items(), key=lambda kv: -kv[1]) if abs(v) >= 1024}
    return sum(info["by"].values()) / sensors, by


def feed_rss(model: str, sensors: int, seconds: float) -> dict[str, float]:
    """The agent's RSS (MB) in a fresh process before and after feeding ``sensors`` x ``seconds``, and
    what its heartbeat reports (after the heap trim it does first: the live data)."""
    body = _steps_upto(len(STEPS) - 2) + textwrap.dedent(f"""
        _before = psutil.Process().memory_info().rss / 2**20
        _agent = feed_agent(outbox, model, SENSORS, {seconds!r})
        _after = psutil.Process().memory_info().rss / 2**20
        _hb = _agent.heartbeat()["resources"]["rss_mb"]
        print("READY " + json.dumps({{"t": 0, "before": _before, "after": _after, "heartbeat": _hb}}), flush=True)
    """)
    _, info = _child_rss(body, model, sensors, {})
    return info


def import_and_load(model: str) -> dict[str, float]:
    body = textwrap.dedent("""
        _t0 = time.perf_counter()
        import edgevib.edge.agent, edgevib.edge.mqtt, edgevib.edge.cli
        from edgevib.cli import build_parser
        build_parser("agent")
        from edgevib.edge.runtime import OnnxModel
        _t1 = time.perf_counter()
        OnnxModel(MODEL)
        _t2 = time.perf_counter()
        print("READY " + json.dumps({"t": _t2 - T0, "imports": _t1 - _t0, "load": _t2 - _t1,
                                     "scipy": any(k.startswith("scipy") for k in sys.modules)}), flush=True)
    """)
    t = time.perf_counter()
    _, info = _child_rss(body, model, 0, {})
    info["process"] = time.perf_counter() - t  # interpreter start included (RSS read and exit are not)
    return info


def startup(model: str) -> dict[str, float]:
    """``edgevib agent`` process start -> first heartbeat, and -> first heartbeat showing an inferred window."""
    import numpy as np
    import paho.mqtt.client as paho

    from edgevib import protocol as proto
    from edgevib.broker import MosquittoProcess, parse_url
    from edgevib.protocol.frames import Frame, encode

    topics = proto.Topics("boot", "gw")
    got: dict[str, float] = {}
    with MosquittoProcess() as broker, tempfile.TemporaryDirectory() as tmp:
        host, port, _ = parse_url(broker.url)
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="boot-bench")
        t0 = [0.0]

        def on_message(_c: Any, _u: Any, m: Any) -> None:
            doc = json.loads(m.payload)
            now = time.perf_counter() - t0[0]
            got.setdefault("first_heartbeat_s", now)
            if doc.get("counters", {}).get("windows", 0) >= 1:
                got.setdefault("first_inference_s", now)

        c.on_message = on_message
        c.on_connect = lambda cl, *a: cl.subscribe(topics.heartbeat, 0)
        c.connect(host, port)
        c.loop_start()
        time.sleep(0.5)
        stop = threading.Event()
        x = np.random.default_rng(0).normal(size=FRAME).astype(np.float32) * 0.1

        def feed() -> None:  # a frame every 50 ms and a heartbeat request every 20 ms
            k = 0
            while not stop.is_set():
                if k % 5 == 0:
                    c.publish(topics.raw("s0"), encode(Frame(k // 5, 0, FS, x), "int16"), qos=0)
                c.publish(topics.cmd, b'{"cmd": "heartbeat"}', qos=0)
                k += 1
                time.sleep(0.01)

        th = threading.Thread(target=feed, daemon=True)
        t0[0] = time.perf_counter()
        agent = subprocess.Popen([sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", broker.url,
                                  "--site", "boot", "--gateway", "gw", "--model", model,
                                  "--outbox", f"{tmp}/ob.sqlite", "--heartbeat", "60"])
        th.start()
        end = time.perf_counter() + 60
        while "first_inference_s" not in got and time.perf_counter() < end:
            time.sleep(0.005)
        stop.set()
        agent.terminate()
        agent.wait(20)
        c.loop_stop()
        c.disconnect()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model file (default: the agent's default model)")
    ap.add_argument("--sensors", default="100,1000", help="sensor counts for the agent row")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up timing (needs Mosquitto)")
    ap.add_argument("--no-options", action="store_true", help="skip the ONNX Runtime options comparison")
    ap.add_argument("--feeds", default="100x8,1000x3",
                    help="in-process feeds NxS (N sensors x S s of signal) whose heartbeat RSS to report ('' to skip)")
    args = ap.parse_args()
    from edgevib.edge.cli import model_path

    model = str(model_path(args.model))
    counts = [int(v) for v in args.sensors.split(",")]
    print(f"edge memory benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  load avg {os.getloadavg()}  "
          f"cpus {os.cpu_count()}  model {Path(model).name}")
    print("\nRSS by step (fresh process per row; delta = what the step adds):")
    print(f"| {'step':44s} | RSS MB | delta MB | of which file-backed (library pages) MB |")
    print(f"|{'-' * 46}|--------|----------|------------------------------------------|")
    rows = memory_table(model, counts[0], {})
    below = rows[len(STEPS) - 2]  # the rows above the agent's do not depend on N
    for n in counts[1:]:
        print(f"(agent row for N = {n}: running)", flush=True)
        rss, info = _child_rss(_steps_upto(len(STEPS) - 1), model, n, {})
        rows.append((STEPS[-1][0].replace("N sensors", f"{n} sensors"), rss, rss - below[1],
                     info["file_mb"] - below[4], info["file_mb"]))
    for name, rss, delta, dfile, _ in rows:
        print(f"| {name:44s} | {rss:6.1f} | {delta:+8.1f} | {dfile:+40.1f} |")
    for name, delta in scipy_reference():
        print(f"for reference, import {name} on top of numpy: {delta:+.1f} MB (the agent no longer imports it)")
    n0 = counts[0]
    total, by = sensor_bytes(model, n0)
    print(f"\nper-sensor state after 8 s (tracemalloc, Python heap, {n0} sensors): {total / 1024:.1f} kB/sensor; "
          + ", ".join(f"{k} {v / 1024:.1f} kB" for k, v in by.items()))
    if not args.no_options:
        print(f"\nONNX Runtime memory options (agent RSS at {n0} sensors; model alone, batch 32, best of 3 x 1 s):")
        for r in ort_options(model, n0):
            print(f"  arena {str(r['arena']):5s} mem_pattern {str(r['mem_pattern']):5s}: RSS {r['rss_mb']:6.1f} MB, "
                  f"{r['win_s']:9.0f} windows/s")
    for spec in filter(None, args.feeds.split(",")):
        n, sec = spec.split("x")
        f = feed_rss(model, int(n), float(sec))
        print(f"in-process feed {n} sensors x {sec} s: RSS {f['before']:.1f} MB before, {f['after']:.1f} MB after, "
              f"heartbeat (after its heap trim) {f['heartbeat']:.1f} MB = "
              f"{(f['heartbeat'] - f['before']) * 1024 / int(n):.1f} kB per sensor over the agent before the feed",
              flush=True)
    for rep in range(2):
        il = import_and_load(model)
        print(f"import + model load (run {rep + 1}): imports {il['imports'] * 1000:.0f} ms, model load "
              f"{il['load'] * 1000:.0f} ms, process start to loaded {il['process'] * 1000:.0f} ms; "
              f"scipy imported: {il['scipy']}")
    if not args.no_startup:
        for rep in range(2):
            s = startup(model)
            print(f"start-up (run {rep + 1}): agent process start -> first heartbeat "
                  f"{s.get('first_heartbeat_s', float('nan')) * 1000:.0f} ms, -> first inference "
                  f"{s.get('first_inference_s', float('nan')) * 1000:.0f} ms")
    print(f"load avg at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
