"""Fleet logic of the Flink job (cloud/flink/fleet.py): gateway liveness and incidents."""

from __future__ import annotations

from edgevib.cloud.flink.fleet import FleetLogic


def test_liveness_goes_offline_only_after_silence_and_back_online() -> None:
    f = FleetLogic(offline_after_ms=3000, incident_k=3, incident_window_ms=5000, resolve_ms=4000)
    hb = {"site": "p", "gateway": "g", "ev_ms": 1000, "model_sha256": "a"}
    st, out = f.on_heartbeat(None, "p/g", hb, now_ms=1000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["online"]
    assert f.on_liveness_timer(st, "p/g", 3999)[1] == []
    st, out = f.on_liveness_timer(st, "p/g", 4000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["offline"]
    st, out = f.on_heartbeat(st, "p/g", {**hb, "ev_ms": 9000, "model_sha256": "b"}, now_ms=9000)
    assert [r["type"] for k, _, r in out if k == "fleet_event"] == ["online", "model_changed"]
    # A replayed older heartbeat does not move the last sighting back.
    st, _ = f.on_heartbeat(st, "p/g", {**hb, "ev_ms": 500, "model_sha256": "b"}, now_ms=500)
    assert st["last_seen_ms"] == 9000


def test_incident_needs_k_alerts_in_the_window_and_resolves_once() -> None:
    f = FleetLogic(offline_after_ms=3000, incident_k=3, incident_window_ms=5000, resolve_ms=4000)
    st = None
    for end in (1000, 7000):  # 1 + 1 alerts, 6 s apart: never 3 within 5 s
        st, out = f.on_bucket(st, "a", {"site": "p", "window_end": end, "n": 1})
        assert out == []
    st, out = f.on_bucket(st, "a", {"site": "p", "window_end": 8000, "n": 2})
    (inc,) = [r for k, _, r in out if k == "incident"]
    assert inc["status"] == "open" and inc["n_alerts"] == 3
    assert f.on_resolve_timer(st, "a", 11_999)[1] == []
    st, out = f.on_resolve_timer(st, "a", 12_000)
    assert [r["status"] for k, _, r in out if k == "incident"] == ["resolved"]
    assert f.on_resolve_timer(st, "a", 20_000)[1] == []


def test_liveness_is_judged_on_what_the_job_has_heard_not_the_wall_clock() -> None:
    f = FleetLogic(offline_after_ms=3000, incident_k=3, incident_window_ms=5000, resolve_ms=4000)
    hb = {"site": "p", "gateway": "g", "ev_ms": 1000}
    st, _ = f.on_heartbeat(None, "p/g", hb, now_ms=1000)
    # The job lags: at wall time 6000 it has heard up to 2000 (others' heartbeats queued behind).
    st2, out, again = f.on_liveness_check(st, "p/g", 6000, frontier_ms=2000)
    assert out == [] and st2 == st and again == 6000 + (4000 - 3000)
    # It caught up: other gateways' heartbeats received at 4000 are processed, none from g.
    st2, out, again = f.on_liveness_check(st, "p/g", 7000, frontier_ms=4000)
    assert again is None and [r["type"] for k, _, r in out if k == "fleet_event"] == ["offline"]
    assert st2 is not None and st2["status"] == "offline"
    # Nothing arrives at all (g was the only gateway): offline one offline_after late.
    assert f.on_liveness_check(st, "p/g", 6999, frontier_ms=1000)[1] == []
    assert f.on_liveness_check(st, "p/g", 7000, frontier_ms=1000)[1] != []
    # Not online: nothing to check.
    assert f.on_liveness_check(None, "p/g", 9000, frontier_ms=9000) == (None, [], None)
