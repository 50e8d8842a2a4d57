"""The network between gateway and broker is cut and restored while alerts are raised.

Topology: the agent runs in its own network namespace, joined to the root namespace by
a veth pair (10.213.N.2 inside, 10.213.N.1 outside). The private Mosquitto listens on
127.0.0.1 (sensors, cloud subscriber) and on 10.213.N.1 (the agent) on the same port.

Why frames already inside the agent, not a local broker for the sensors: the agent has
one broker connection for frames in and alerts out, so a second broker would need a
bridge that is not part of the product. Instead the agent is frozen (SIGSTOP), three
fresh sensors send fault frames that land in its socket, the link is taken down on the
root side, and the agent is thawed: it raises three alerts with the link down. Its QoS 1
publishes get no PUBACK; with a 2 s keepalive it notices the dead link (logs "lost",
the broker publishes its last-will "offline"). The test checks the alerts wait in the
outbox while the link is down, brings the link up, and asserts the agent reconnects and
every alert arrives once after de-duplication.

Needs root and ``ip`` (iproute2). Missing either fails the test with the fix; never skipped.
Namespace and veth are removed even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgevib.broker import MosquittoProcess
from tests.reliability.common import (
    CloudBridge,
    Publisher,
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


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"reliability: 'ip {' '.join(args)}' failed: {r.stderr.strip()} "
                             "(needs root or CAP_NET_ADMIN)")


@dataclass
class Netns:
    name: str
    outside: str  # veth end in the root namespace
    inside: str
    host_ip: str  # the broker's address, root side
    gw_ip: str


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.fail("reliability: 'ip' not found; install it: apt-get install -y iproute2")
    n = os.getpid() % 200 + 20
    ns = Netns(f"evrel{os.getpid()}", f"evr{n}o", f"evr{n}i", f"10.213.{n}.1", f"10.213.{n}.2")
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.outside, "type", "veth", "peer", "name", ns.inside)
        _ip("link", "set", ns.inside, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.outside)
        _ip("link", "set", ns.outside, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.gw_ip}/30", "dev", ns.inside)
        _ip("-n", ns.name, "link", "set", ns.inside, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.outside], capture_output=True)  # removes both ends
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def nbroker(netns: Netns) -> Iterator[MosquittoProcess]:
    try:
        b = MosquittoProcess()
    except Exception as exc:
        pytest.fail(f"{exc} (the reliability suite needs mosquitto: apt-get install mosquitto)")
    b.conf.write_text(
        f"listener {b.port} 127.0.0.1\nlistener {b.port} {netns.host_ip}\nallow_anonymous true\n"
        "persistence false\nmax_queued_messages 100000\nmax_inflight_messages 1000\n")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_link_cut_while_alerts_are_raised_agent_notices_and_every_alert_arrives_once(
        netns: Netns, nbroker: MosquittoProcess, tmp_path: Path) -> None:
    ob, log = tmp_path / "ob.sqlite", tmp_path / "agent.log"
    sub = Subscriber(nbroker.port, "rel-cloud-net")
    bridge = CloudBridge(nbroker.url, tmp_path, "rel-bridge-net")
    pub = Publisher(nbroker.port)
    cmd = ["ip", "netns", "exec", netns.name, *agent_cmd(f"mqtt://{netns.host_ip}:{nbroker.port}", ob)]
    agent = start_agent(cmd, log, EDGEVIB_KEEPALIVE_S="2")  # `ip netns exec` execs: same pid
    try:
        wait(lambda: bool(sub.last_hb()) and sub.status[-1:] == [b"online"], 30,
             "the agent's first heartbeat through the veth link")
        pub.burst(["n0a"], "IR", n=4)
        wait(lambda: "n0a" in sub.sensors(), 20, "an alert through the link before the cut")
        fresh = ["n1a", "n1b", "n1c"]
        os.kill(agent.pid, signal.SIGSTOP)
        pub.burst(fresh, "IR", n=4)
        time.sleep(0.7)  # the frames reach the frozen agent's socket
        t_cut = time.monotonic()
        _ip("link", "set", netns.outside, "down")
        os.kill(agent.pid, signal.SIGCONT)
        wait(lambda: set(fresh) <= set(outbox_alert_sensors(ob)), 15, "alerts raised with the link down")
        assert not set(fresh) & sub.sensors(), "nothing can cross a link that is down"
        wait(lambda: b"lost mqtt://" in log.read_bytes(), 20, "the agent to notice the dead link (its log)")
        t_noticed = time.monotonic() - t_cut
        wait(lambda: sub.status[-1:] == [b"offline"], 20, "the broker to publish the agent's last-will")
        held = sorted(set(outbox_alert_sensors(ob)))
        time.sleep(1.0)  # the agent retries against a dead link for a while
        _ip("link", "set", netns.outside, "up")
        t_up = time.monotonic()
        wait(lambda: sub.status[-1:] == [b"online"], 40, "the agent to reconnect after the link is back")
        t_reconnect = time.monotonic() - t_up
        wait(lambda: set(fresh) <= sub.sensors(), 20, "the held alerts after the link is back")
        wait(settled(sub), 20, "the agent to settle", strict=False)
        hb = sub.last_hb()
        published = raised_by_agent(hb)
        counts = {
            "link_cuts": 1, "keepalive_s": 2, "alerts_published": published, "alerts_received_raw": len(sub.alerts),
            "alerts_delivered_distinct": len(sub.ids()), "alerts_acked_via_outbox": int(hb["counters"].get("alerts_acked", 0)),
            "alerts_stored_bridge_spool": len(bridge.alert_ids(at_least=published)),
            "held_in_outbox_while_down": held, "disconnect_noticed_after_s": round(t_noticed, 1),
            "reconnected_after_link_up_s": round(t_reconnect, 1), "outbox_pending_end": hb["outbox_pending"],
            "agent_alive": agent.poll() is None,
        }
        write_counts("network_cut", counts)
        assert agent.poll() is None
        assert published == 4 and held == fresh, counts
        assert len(sub.ids()) == published == counts["alerts_acked_via_outbox"], counts
        assert bridge.alert_ids() == sub.ids(), counts
        assert hb["outbox_pending"] == 0
    finally:
        stop_agent(agent)
        bridge.stop()
        pub.close()
        sub.close()
