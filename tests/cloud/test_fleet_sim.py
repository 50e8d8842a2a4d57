"""Issue 18: simulated gateways through broker -> shared bridges -> Flink job -> store for about
a minute (benchmarks/fleet_sim.py, shorter; one run shared by the tests here): one bridge
SIGKILLed and restarted under its client id early in the run, 2 % of the gateways go silent
later.

The fleet is sized for correctness, not scale: GATEWAYS = 500 offer 125 records/s to the keyed
fleet operator, a quarter of what one instance handled on the dev VM (~500-600/s, docs/scale.md).
With 2,000 (500 records/s, the operator's ceiling there) the test passed on that VM and failed on
one a third as fast (2026-12-05: the job 147 s behind, detection 200 s late): a correctness check
must not depend on the machine's speed. The 2,000-gateway figures are the benchmark's
(``python benchmarks/fleet_sim.py``, docs/scale.md).

* nothing lost: alerts and indicators stored = published, no duplicate;
* an offline event for every silent gateway;
* liveness right: no running gateway ever reported offline (0 false reports, also across the
  bridge kill), every gateway in its true state in the store at the end. The job judges
  silence on what it has heard (``FleetLogic.liveness_clock``); judged on the wall clock, a
  transient delay made gateways flap offline and the flapping fed itself (4,121 false reports
  over 51 s at load 13 before; docs/scale.md).
* detection time: the silent ones reported within offline_after_s plus slack. The job's lag
  on heartbeats adds to it one for one; it was ~13 s here (p50 33 s for 20 s configured, an
  xfail) until the fleet operator's Python worker kept its keyed states in memory
  (``job.state_cache_size``; PyFlink's default of 1,000 thrashed at 2,000 gateways).
"""

from __future__ import annotations

import pytest

from benchmarks.fleet_sim import FleetResult, run_fleet

pytestmark = pytest.mark.integration

GATEWAYS = 500
OFFLINE_AFTER_S = 20.0
SLACK_S = 10.0  # heartbeat batching (1 s), bridge batches (0.5 s), file listing, a loaded 2-core machine


@pytest.fixture(scope="module")
def fleet(flink_prereqs: None, tmp_path_factory: pytest.TempPathFactory) -> FleetResult:
    # Heartbeats every 5 s; the killed bridge's share of them waits for its restart (~5 s +
    # the restart), so the longest honest gap is ~15 s, under offline_after_s. The kill is
    # over before the silent gateways stop.
    res = run_fleet(tmp_path_factory.mktemp("fleet"), gateways=GATEWAYS, seconds=55, heartbeat_s=5.0, indicators_s=20.0,
                    alert_rate=10.0, offline_after_s=OFFLINE_AFTER_S, stop_at=0.4, bridges=2, kill_bridge=True,
                    kill_at=0.1, restart_at=0.2)
    print(f"\nfleet: {res.as_dict()}")
    return res


def test_nothing_lost_and_every_silent_gateway_offline(fleet: FleetResult) -> None:
    assert fleet.bridge_killed and len(fleet.kill_s) == 2
    assert fleet.stored["alerts"] == fleet.published["alerts"] == fleet.stored["alerts_distinct"], fleet.stored
    assert fleet.stored["indicators"] == fleet.published["indicators"], fleet.stored
    assert fleet.silent == round(0.02 * GATEWAYS) and fleet.offline_detected == fleet.silent, \
        "an offline event for every silent gateway"


def test_no_running_gateway_reported_offline_and_every_final_state_right(fleet: FleetResult) -> None:
    assert fleet.false_offline_n == 0, (fleet.false_offline_n, fleet.false_offline_s, fleet.kill_s)
    assert fleet.status_wrong == [] and fleet.store_offline == fleet.silent, "every gateway ends in its true state"


def test_silent_gateways_detected_within_offline_after_plus_slack(fleet: FleetResult) -> None:
    assert OFFLINE_AFTER_S - 1 <= fleet.offline_s["p50"] and fleet.offline_s["max"] <= OFFLINE_AFTER_S + SLACK_S
