"""Model-update benchmark: time from ``push()`` to the gateway's verdict, per zoo model. Prints a report.

A private Mosquitto, one agent (``run_agent`` in a thread) on ``cnn_small`` fed noise frames
so its shadow ring is full, then ``--repeat`` pushes of each model (the registry copy of
``cnn_small`` under another name, and the full ``cnn``). ``--factor`` is the agent's
``update.max_latency_factor`` (the full CNN is several times slower than cnn_small, so at
the default 3 it is refused in shadow-run).

    .venv/bin/python benchmarks/model_update.py --repeat 5 --factor 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from edgevib.cloud.rollout import push
from edgevib.edge.cli import run_agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.mqtt import MqttLink
from edgevib.models.registry import Registry, keygen

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import Frame, encode

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--factor", type=float, default=20.0)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="edgevib-bench-update-"))
    broker = MosquittoProcess()
    broker.start()
    priv, pub = keygen(d / "keys")
    reg = Registry(d / "registry", private_key=priv)
    t0 = time.perf_counter()
    reg.add(ZOO / "cnn.onnx")
    print(f"Registry.add(cnn.onnx): {(time.perf_counter() - t0) * 1000:.0f} ms")
    reg.add(ZOO / "cnn_small.onnx", name="cnn_small_copy")
    cfg = load_agent_config(None, env={}, broker_url=broker.url, site="bench", gateway="gw",
                            model=str(ZOO / "cnn_small.onnx"), heartbeat_s=1,
                            outbox={"path": str(d / "outbox.sqlite")},
                            update={"public_key": str(pub), "model_dir": str(d / "models"),
                                    "max_latency_factor": args.factor})
    stop = threading.Event()
    agent = threading.Thread(target=run_agent, args=(cfg, stop), daemon=True)
    agent.start()
    topics = proto.Topics("bench", "gw")
    hb = MqttLink(broker.url, "bench-hb", connect=False)
    hb.subscribe(topics.heartbeat)
    hb.start()
    assert hb.poll(30) is not None, "no heartbeat from the agent"
    tx = MqttLink(broker.url, "bench-tx")
    assert tx.wait_connected(5)
    rng = np.random.default_rng(0)
    for i in range(30):  # fills the 64-window shadow ring
        tx.publish(topics.raw("de"), encode(Frame(i, i * 4096 * 10**9 // 12000, 12000.0,
                                                  rng.normal(0, 0.1, 4096).astype(np.float32))), qos=1)
    time.sleep(2)
    try:
        for name in ("cnn_small_copy", "cnn"):
            size = reg.get(name).manifest.size
            times, verdicts = [], set()
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = push(reg, name, None, [("bench", "gw")], broker_url=broker.url, timeout_s=30)
                times.append((time.perf_counter() - t0) * 1000)
                g = res.gateways["bench/gw"]
                verdicts.add(f"{g['result']}/{g['reason']}")
            print(f"{name:<15} {size:>7} B  push->verdict p50 {statistics.median(times):.0f} ms "
                  f"max {max(times):.0f} ms  ({', '.join(sorted(verdicts))})")
    finally:
        stop.set()
        agent.join(10)
        for link in (hb, tx):
            link.close()
        broker.stop()


if __name__ == "__main__":
    main()
