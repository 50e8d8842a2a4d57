"""Issue 18: 2,000 simulated gateways through broker -> shared bridges -> Flink job -> store
for a minute (benchmarks/fleet_sim.py, shorter): one bridge SIGKILLed and restarted under
its client id mid-run, 2 % of the gateways go silent. Liveness right for every gateway
(silent ones offline, detected within offline_after_s plus the pipeline's delay; no running
gateway reported offline after the job started) and alerts and indicators stored = published.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fleet_sim import run_fleet

pytestmark = pytest.mark.integration

OFFLINE_AFTER_S = 15.0
# Heartbeats reach the liveness operator batched per heartbeat_batch_s (1 s) through 100 ms
# bridge batches and the file source's 100 ms listing; the timer fires offline_after_s after
# the last one. Slack for a loaded 2-core CI machine.
SLACK_S = 10.0


def test_two_thousand_gateways_liveness_and_nothing_lost(flink_prereqs: None, tmp_path: Path) -> None:
    res = run_fleet(tmp_path, gateways=2000, seconds=60, offline_after_s=OFFLINE_AFTER_S, stop_at=0.4,
                    bridges=2, kill_bridge=True)
    print(f"\nfleet: {res.as_dict()}")
    assert res.bridge_killed
    assert res.stored["alerts"] == res.published["alerts"] == res.stored["alerts_distinct"], res.stored
    assert res.stored["indicators"] == res.published["indicators"], res.stored
    assert res.silent == 40 and res.offline_detected == res.silent and res.store_offline == res.silent
    assert res.offline_s["max"] <= OFFLINE_AFTER_S + SLACK_S, res.offline_s
    assert res.offline_s["p50"] >= OFFLINE_AFTER_S - 1, "not before the configured time"
    assert res.false_offline == [] and res.status_wrong == []
