"""Level-crossing events (cloud/flink/levels.py): ISO, absolute and baseline levels, hysteresis, replays."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.flink.levels import LevelLogic, LevelSpec, parse_sensor_rules

from edgevib.errors import ConfigError
from edgevib.protocol import ISO_BOUNDARIES


def _rec(t: int, v: float | None, *, group: int = 2, foundation: str = "rigid", sensor: str = "s") -> dict[str, Any]:
    return {"site": "p", "gateway": "g", "sensor": sensor, "asset": f"p/g/{sensor}", "ev_ms": t, "vel_rms_mm_s": v,
            "iso_group": group, "iso_foundation": foundation, "iso_zone": None}


def _run(lg: LevelLogic, values: list[float], key: str = "p/g/s", **kw: Any) -> list[dict[str, Any]]:
    st: dict[str, Any] | None = None
    events = []
    for t, v in enumerate(values):
        st, out = lg.on_indicator(st, key, _rec(t * 10_000, v, **kw))
        events += [r for kind, _, r in out if kind == "level_event"]
    return events


def test_iso_levels_are_zone_c_and_d_of_the_group_and_foundation() -> None:
    lg = LevelLogic(confirm_n=1)
    for (group, foundation), (_, c, d) in ISO_BOUNDARIES.items():
        ev = _run(lg, [0.5 * c, c, c * 1.01, d, d * 1.01], group=group, foundation=foundation)
        # a value on a boundary stays in the lower zone
        assert [(e["kind"], e["level"], e["ts_ms"]) for e in ev] == [("raised", "warning", 20_000),
                                                                      ("raised", "alarm", 40_000)], (group, foundation)
        assert ev[0]["threshold"] == c and ev[1]["threshold"] == d and ev[0]["mode"] == "iso"
        assert json.loads(ev[1]["detail"])["alarm"] == d


def test_a_value_hovering_at_the_level_raises_once_and_clears_once() -> None:
    rng = np.random.default_rng(0)
    lg = LevelLogic(default=LevelSpec.parse("absolute:4:8"), hysteresis=0.1, confirm_n=2)
    hover = list(4.0 + rng.uniform(-0.3, 0.3, 500))  # noise across the level, inside the 10 % band
    ev = _run(lg, [2.0] * 5 + hover + [3.0] * 5)
    assert [(e["kind"], e["level"]) for e in ev] == [("raised", "warning"), ("cleared", "normal")]
    # without hysteresis the same readings would have flapped: the test can fail
    flappy = _run(LevelLogic(default=LevelSpec.parse("absolute:4:8"), hysteresis=0.0, confirm_n=1),
                  [2.0] * 5 + hover + [3.0] * 5)
    assert len(flappy) > 50


def test_a_single_spike_needs_confirmation() -> None:
    lg = LevelLogic(default=LevelSpec.parse("absolute:4:8"), confirm_n=3)
    assert _run(lg, [2, 9, 2, 9, 9, 2, 2, 2]) == []
    ev = _run(lg, [2, 9, 5, 9, 2])  # three above warning, one of them not above alarm: warning
    assert [(e["kind"], e["level"], e["previous"]) for e in ev] == [("raised", "warning", "normal")]


def test_alarm_clears_through_warning_with_hysteresis() -> None:
    lg = LevelLogic(default=LevelSpec.parse("absolute:4:8"), hysteresis=0.25, confirm_n=1)
    ev = _run(lg, [9, 7, 6.5, 5.9, 3.5, 3.0, 2.9])
    # alarm holds down to 6 (8 x 0.75), warning down to 3 (4 x 0.75); a value on it clears
    assert [(e["kind"], e["level"], e["value"]) for e in ev] == [
        ("raised", "alarm", 9), ("cleared", "warning", 5.9), ("cleared", "normal", 3.0)]
    assert ev[1]["threshold"] == pytest.approx(6.0)


def test_baseline_is_the_median_of_the_first_n_readings() -> None:
    lg = LevelLogic(default=LevelSpec.parse("baseline:2:4"), baseline_n=5, confirm_n=1)
    ev = _run(lg, [1.0, 1.2, 0.9, 50.0, 1.1, 2.1, 2.3, 4.5, 1.0])
    assert ev[0]["kind"] == "baseline" and ev[0]["value"] == pytest.approx(1.1)  # the spike does not move it
    assert [(e["kind"], e["level"], e["threshold"]) for e in ev[1:]] == [
        ("raised", "warning", pytest.approx(2.2)), ("raised", "alarm", pytest.approx(4.4)),
        ("cleared", "normal", pytest.approx(4.4 * 0.9))]


def test_duplicates_and_replays_are_ignored_and_ids_are_stable() -> None:
    lg = LevelLogic(default=LevelSpec.parse("absolute:4:8"), confirm_n=1)
    st, out1 = lg.on_indicator(None, "p/g/s", _rec(1000, 5.0))
    st2, out2 = lg.on_indicator(st, "p/g/s", _rec(1000, 5.0))  # the same reading again
    assert len(out1) == 1 and out2 == [] and st2 == st
    _, out3 = lg.on_indicator(None, "p/g/s", _rec(1000, 5.0))  # a replay from a checkpoint
    assert out3[0][2]["id"] == out1[0][2]["id"]
    assert lg.on_indicator(st, "p/g/s", _rec(2000, None))[1] == []  # a reading without velocity


def test_per_sensor_rules_first_match_wins() -> None:
    lg = LevelLogic(rules=parse_sensor_rules(("p/g/pump=absolute:1:2", "p/*/pump*=baseline:2:4")), confirm_n=1)
    assert lg.spec_for("p/g/pump").mode == "absolute"
    assert lg.spec_for("p/g2/pump-de").mode == "baseline"
    assert lg.spec_for("p/g/fan").mode == "iso"


@pytest.mark.parametrize("bad", ["absolute:7:4", "absolute:x:4", "baseline:0.5:4", "zones", "iso:1"])
def test_bad_specs_name_the_value_and_the_fix(bad: str) -> None:
    with pytest.raises(ConfigError, match="use"):
        LevelSpec.parse(bad)


def test_levels_config_from_the_environment_and_its_validation() -> None:
    cfg = load_config(None, env={"EDGEVIB_LEVELS__SENSORS": "demo/*/pump=baseline:2:4,demo/g/fan=absolute:3:6",
                                 "EDGEVIB_LEVELS__HYSTERESIS_PCT": "20"})
    lg = cfg.levels.logic()
    assert lg.hysteresis == pytest.approx(0.2) and lg.spec_for("demo/x/pump").mode == "baseline"
    with pytest.raises(ConfigError, match="SITE/GATEWAY/SENSOR"):
        load_config(None, env={"EDGEVIB_LEVELS__SENSORS": "pump=absolute:3:6"})
    with pytest.raises(ConfigError, match="hysteresis_pct"):
        load_config(None, env={"EDGEVIB_LEVELS__HYSTERESIS_PCT": "100"})
