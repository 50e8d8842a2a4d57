"""Broker SIGKILLed and restarted four times while sensors stream and alerts are raised.

The agent runs as its own process against a private Mosquitto with persistence on (the
cloud subscriber's session and subscription survive the crash, as a production broker's
would). Four sensors stream in real time and flip between healthy and inner-race every
2 s, so alerts are raised and cleared throughout. In each cycle the agent is also frozen
(SIGSTOP) while two fresh sensors send fault frames into its socket, the broker is
SIGKILLed, and the agent is thawed: it raises those alerts while the broker is dead, and
the test sees them waiting in the outbox before the broker comes back.

The cloud's MQTT -> spool bridge (cloud/ingest/bridge.py: persistent MQTT 5 session, acknowledges
only after a batch is fsynced) runs beside the subscriber: its spool files are what the Flink
job reads, so the distinct alert ids in them are the alerts "stored" on the cloud side.

Asserted: the agent survives; every alert the agent counted reaches the subscriber and the
bridge's spool, once after de-duplication by id; the outbox ends empty.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevib.broker import MosquittoProcess
from tests.reliability.common import (
    CloudBridge,
    Publisher,
    Streamer,
    Subscriber,
    agent_cmd,
    outbox_alert_sensors,
    raised_by_agent,
    settled,
    start_agent,
    stop_agent,
    wait,
    write_counts,
)

pytestmark = pytest.mark.integration
CYCLES = 4


def _persistent(b: MosquittoProcess) -> None:
    """Rewrite the private broker's config: persistence saved on every change (survives SIGKILL)."""
    d = b.conf.parent
    b.conf.write_text(
        f"listener {b.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {d}/\n"
        "autosave_interval 1\nautosave_on_changes true\nmax_queued_messages 100000\nmax_inflight_messages 1000\n")


def _missing(log: Path, sub: Subscriber) -> list[str]:
    """Alerts the agent logged but the subscriber never got, as 'time sensor state' (diagnostics)."""
    logged = re.findall(r"^(\S+ \S+) INFO +edgevib.edge.agent: fault alert (\w+): sensor (\S+)",
                        log.read_text(errors="replace"), re.M)
    got = [(str(a["sensor"]), str(a["state"])) for a in {str(a["id"]): a for a in sub.alerts}.values()]
    out = []
    for t, state, sensor in logged:
        if (sensor, state) in got:
            got.remove((sensor, state))
        else:
            out.append(f"{t} {sensor} {state}")
    return out


def _sigkill(b: MosquittoProcess) -> None:
    assert b.proc is not None and b.proc.poll() is None, "the broker should be running"
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    b.proc = None


@pytest.fixture
def pbroker() -> Iterator[MosquittoProcess]:
    try:
        b = MosquittoProcess()
    except Exception as exc:
        pytest.fail(f"{exc} (the reliability suite needs mosquitto: apt-get install mosquitto)")
    _persistent(b)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_broker_sigkill_restart_x4_every_alert_arrives_once(pbroker: MosquittoProcess, tmp_path: Path) -> None:
    ob = tmp_path / "ob.sqlite"
    sub = Subscriber(pbroker.port, "rel-cloud-kill", persistent=True)
    bridge = CloudBridge(pbroker.url, tmp_path, "rel-bridge-kill")
    pub = Publisher(pbroker.port)
    agent: subprocess.Popen[bytes] = start_agent(agent_cmd(pbroker.url, ob), tmp_path / "agent.log")
    stream = Streamer(pub, n=4, period_s=2.0)
    held: list[int] = []
    events: list[str] = []  # when each broker kill and restart happened, for the diagnostics
    try:
        wait(lambda: bool(sub.last_hb()), 30, "the agent's first heartbeat")
        stream.start()
        for cycle in range(CYCLES):
            time.sleep(2.5)  # alerts raised and delivered with the broker up
            fresh = [f"k{cycle}a", f"k{cycle}b"]
            stream.paused.set()
            os.kill(agent.pid, signal.SIGSTOP)
            pub.burst(fresh, "IR", n=4)
            time.sleep(0.7)  # the frames reach the frozen agent's socket
            _sigkill(pbroker)
            events.append(f"{time.strftime('%H:%M:%S')} kill {cycle}")
            os.kill(agent.pid, signal.SIGCONT)
            wait(lambda f=fresh: set(f) <= set(outbox_alert_sensors(ob)), 15,
                 f"cycle {cycle}: alerts of {fresh} raised while the broker is dead, held in the outbox")
            held.append(len(outbox_alert_sensors(ob)))
            pbroker.start()
            events.append(f"{time.strftime('%H:%M:%S')} restart {cycle}")
            wait(lambda: pub.connected and sub.subscribed, 15, "sensors and subscriber to reconnect")
            stream.paused.clear()
        stream.stop()
        wait(settled(sub), 60, "the agent to go idle and every alert it counted to arrive", strict=False)
        hb = sub.last_hb()
        published, delivered_ids = raised_by_agent(hb), sub.ids()
        spooled = bridge.alert_ids(at_least=published)
        counts = {
            "broker_kills": CYCLES, "frames_streamed": stream.sent,
            "alerts_published": published, "alerts_received_raw": len(sub.alerts),
            "alerts_delivered_distinct": len(delivered_ids),
            "alerts_stored_bridge_spool": len(spooled),
            "alerts_acked_via_outbox": int(hb["counters"].get("alerts_acked", 0)),
            "outbox_write_failed": int(hb["counters"].get("outbox_write_failed", 0)),
            "held_in_outbox_per_outage": held, "outbox_pending_end": hb["outbox_pending"],
            "agent_alive": agent.poll() is None,
        }
        if len(delivered_ids) != published:
            counts["missing"] = _missing(tmp_path / "agent.log", sub)
            counts["broker_events"] = events
        write_counts("broker_kill", counts)
        assert agent.poll() is None, "the agent survived four broker crashes"
        assert published >= 2 * CYCLES + 4, counts  # the fresh sensors' alerts and the streamers'
        assert len(delivered_ids) == published, counts
        assert spooled == delivered_ids, counts  # the cloud side stored exactly the alerts delivered
        assert counts["alerts_acked_via_outbox"] == published, counts
        assert hb["outbox_pending"] == 0
        assert {f"k{c}{x}" for c in range(CYCLES) for x in "ab"} <= sub.sensors()
    finally:
        stream.stop()
        stop_agent(agent)
        bridge.stop()
        pub.close()
        sub.close()
