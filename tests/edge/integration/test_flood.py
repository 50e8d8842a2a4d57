"""Issue 19 on a real Mosquitto: a flood of garbage against ``edgevib agent`` (its own process)
while a real inner-race recording streams; memory, drops, heartbeat size and the alert stay
within the issue's bounds. The scenario is benchmarks/flood.py (which prints the figures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgevib.edge.cli import model_path

from benchmarks.flood import over_packet_limit, run_scenario
from edgevib.broker import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.data]


def test_flood_of_garbage_keeps_the_agent_bounded_and_the_real_alert_on_time(
        broker: MosquittoProcess, cwru_dir: Path, tmp_path: Path) -> None:
    model = Path(os.environ.get("EDGEVIB_TEST_MODEL") or model_path(""))
    r = run_scenario(broker.url, model, tmp_path / "ob.sqlite", cwru_dir, seconds=8.0)
    print(r)  # the figures, for the log
    assert r["agent_alive"]
    assert r["sent_total"] > 5000, "the flood publisher barely published"
    rss = r["rss_mb"]
    assert rss["peak"] <= 150, rss
    assert rss["after"] <= rss["before"] + 20, rss
    assert r["heartbeat_bytes_max"] < 64 * 1024
    c, d = r["counters"], r["drops"]
    assert r["stable"], "counters still moving after the flood: not all messages accounted for"
    # Every message the broker handed the agent is queued or a counted transport drop ...
    arrived = c["received"] + sum(d.get(k, 0) for k in ("too_large", "queue_full", "queue_bytes_full"))
    assert arrived == r["expected_arrived"], (arrived, r["expected_arrived"], over_packet_limit())
    # ... and every queued message is a frame or a counted drop (cmd, models, bad topic)
    assert c["received"] == c["frames_in"] + d["bad_cmd"] + d["bad_name"] + c.get("updates_garbage", 0)
    assert d["too_large"] == r["sent"]["cmd_263k"]
    assert d["bad_name"] == r["sent"]["bad_name"] and d["bad_cmd"] == r["sent"]["bad_cmd"] + r["sent"]["bad_cmd_json"]
    assert d.get("too_many_sensors", 0) > 0 and c["sensors"] == 1000  # max_sensors held
    assert r["heartbeat_sensors"] <= 100
    # the real recording's fault alert, within the 3 s alert-latency target of its signal
    assert r["alert"]["fault_type"] == "IR" and r["alert"]["physics"] == "IR"
    assert 0 < r["alert_latency_s"] <= 3.0, r["alert_latency_s"]
