"""Condition indicators: velocity against the analytic sine, ISO zones, the wire schema, the
config, and the agent publishing them per sensor per interval (in-memory link)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.indicators import G, compute, iso_zone, velocity_rms_mm_s
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import Outbox
from edgevib.models.bearing import CWRU_DE_6205
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta
from edgevib.models.orders import fault_frequencies
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.errors import ConfigError
from edgevib.protocol import ISO_BOUNDARIES
from edgevib.protocol.errors import ProtocolError
from edgevib.protocol.frames import Frame, encode

FS = 12000.0
T = proto.Topics("plant", "gw")


def _sine(f_hz: float, amp_g: float, seconds: float = 2.0, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    return amp_g * np.sin(2 * np.pi * f_hz * t + phase)


def _analytic_mm_s(f_hz: float, amp_g: float) -> float:
    return amp_g * G / (2 * math.pi * f_hz) / math.sqrt(2) * 1000


# -- velocity ------------------------------------------------------------------------------------

def test_a_100_hz_sine_of_1_g_is_11_04_mm_s_rms() -> None:
    v = velocity_rms_mm_s(_sine(100.0, 1.0), FS)
    assert _analytic_mm_s(100.0, 1.0) == pytest.approx(11.036, abs=1e-3)
    assert v == pytest.approx(11.04, abs=0.005)


@pytest.mark.parametrize("f_hz", [12.5, 37.1, 100.3, 420.0, 999.0])
def test_velocity_matches_the_analytic_sine_across_the_band(f_hz: float) -> None:
    # 100.3 Hz and 37.1 Hz fall between FFT bins (0.5 Hz): the window keeps their energy
    assert velocity_rms_mm_s(_sine(f_hz, 0.5), FS) == pytest.approx(_analytic_mm_s(f_hz, 0.5), rel=0.005)


@pytest.mark.parametrize("f_hz", [2.0, 5.0, 1500.0, 4000.0])
def test_velocity_ignores_what_is_outside_10_to_1000_hz(f_hz: float) -> None:
    # a 5 Hz sine of 1 g would be 221 mm/s if it counted
    assert velocity_rms_mm_s(_sine(f_hz, 1.0), FS) < 0.01


def test_velocity_adds_in_power_and_ignores_an_offset() -> None:
    x = _sine(100.0, 1.0) + _sine(200.0, 1.0, phase=1.0) + 0.7
    want = math.hypot(_analytic_mm_s(100.0, 1.0), _analytic_mm_s(200.0, 1.0))
    assert velocity_rms_mm_s(x, FS) == pytest.approx(want, rel=0.003)


# -- ISO 10816-3 zones ---------------------------------------------------------------------------

@pytest.mark.parametrize(("group", "foundation", "bounds"), [
    (2, "rigid", (1.4, 2.8, 4.5)), (2, "flexible", (2.3, 4.5, 7.1)),
    (1, "rigid", (2.3, 4.5, 7.1)), (1, "flexible", (3.5, 7.1, 11.0)),
])
def test_iso_zone_boundaries(group: int, foundation: str, bounds: tuple[float, float, float]) -> None:
    assert ISO_BOUNDARIES[(group, foundation)] == bounds
    zone = lambda v: iso_zone(v, group=group, foundation=foundation)  # noqa: E731
    assert zone(0.0) == "A"
    for lower, upper, b in zip("ABC", "BCD", bounds, strict=True):
        assert zone(b) == lower  # on the boundary: the lower zone
        assert zone(b + 0.01) == upper


def test_iso_zone_refuses_an_unknown_group() -> None:
    from edgevib.edge.errors import EdgeError

    with pytest.raises(EdgeError, match="iso_group=3"):
        iso_zone(1.0, group=3, foundation="rigid")


# -- all indicators of one stretch ---------------------------------------------------------------

def test_compute_on_an_outer_race_fault_names_its_line() -> None:
    fh = fault_frequencies(CWRU_DE_6205, 1797.0)
    faulty = compute(simulate("OR", duration_s=2.0, rpm=1797.0, seed=1)[: int(2 * FS)], FS, fh)
    healthy = compute(simulate("normal", duration_s=2.0, rpm=1797.0, seed=1)[: int(2 * FS)], FS, fh)
    assert faulty.env_db["bpfo"] > 20 > max(healthy.env_db.values())
    assert faulty.kurtosis > 6 > healthy.kurtosis
    assert faulty.crest == pytest.approx(faulty.acc_peak_g / faulty.acc_rms_g)
    assert faulty.duration_s == 2.0 and set(faulty.fields()["env_db"]) == set(proto.ENVELOPE_LINES)


def test_compute_of_a_sine_gives_the_textbook_shape_figures() -> None:
    ind = compute(_sine(100.0, 1.0), FS, fault_frequencies(CWRU_DE_6205, 1797.0))
    assert ind.acc_rms_g == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    assert ind.acc_peak_g == pytest.approx(1.0, rel=1e-3) and ind.crest == pytest.approx(math.sqrt(2), rel=1e-3)
    assert ind.kurtosis == pytest.approx(1.5, rel=1e-2)
    assert ind.vel_rms_mm_s == pytest.approx(11.04, abs=0.005) and ind.iso_zone == "D"


# -- protocol ------------------------------------------------------------------------------------

def _doc(**over: object) -> dict[str, object]:
    kw: dict[str, object] = dict(
        site="plant", gateway="gw", sensor="de", asset="pump-3", t_ns=1_700_000_000_000_000_000, duration_s=2.0,
        sample_rate=12000.0, acc_rms_g=0.29, acc_peak_g=1.57, crest=5.43, kurtosis=5.6, vel_rms_mm_s=3.1,
        iso_zone="C", iso_group=2, iso_foundation="rigid",
        env_db={"bpfo": 4.1, "bpfi": 27.2, "bsf2": 3.0, "ftf": 1.0}, rpm=1797.0, rpm_source="estimated",
        anomaly_ratio=2.4)
    kw.update(over)
    return proto.make_indicators(**kw)  # type: ignore[arg-type]


def test_indicators_round_trip_on_their_own_topic() -> None:
    doc = _doc()
    assert T.indicators == "edgevib/v1/plant/gw/indicators"
    assert proto.parse_topic(T.indicators).kind == "indicators"
    assert proto.subscription("indicators") == "edgevib/v1/+/+/indicators"
    back = proto.parse_indicators(proto.dumps(doc))
    assert back == doc and back["schema"] == "edgevib.indicators/1" and back["vel_band_hz"] == [10.0, 1000.0]
    assert proto.parse_indicators(proto.dumps(_doc(anomaly_ratio=None, asset=None)))["anomaly_ratio"] is None


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("vel_rms_mm_s", -1.0, "bad_field"), ("vel_rms_mm_s", None, "missing_field"), ("kurtosis", "high", "bad_field"),
    ("iso_zone", "E", "bad_field"), ("iso_group", 3, "bad_field"), ("iso_foundation", "soft", "bad_field"),
    ("rpm_source", "guessed", "bad_field"), ("rpm", 0.0, "bad_field"), ("t_ns", 1.5, "bad_field"),
    ("sensor", "a/b", "bad_name"), ("vel_band_hz", [1000, 10], "bad_field"), ("anomaly_ratio", -0.5, "bad_field"),
    ("schema", "edgevib.indicators/2", "bad_schema"),
])
def test_bad_indicators_raise_protocol_error_naming_the_field(field: str, value: object, reason: str) -> None:
    doc = json.loads(proto.dumps(_doc()))
    doc[field] = value
    with pytest.raises(ProtocolError) as err:
        proto.parse_indicators(json.dumps(doc).encode())
    assert err.value.reason == reason
    assert field in str(err.value) or reason in ("bad_schema", "bad_name")


def test_envelope_lines_are_required_and_numeric() -> None:
    doc = json.loads(proto.dumps(_doc()))
    del doc["env_db"]["bpfi"]
    with pytest.raises(ProtocolError, match=r"env_db\.bpfi"):
        proto.validate_indicators(doc)
    doc["env_db"]["bpfi"] = float("nan")
    with pytest.raises(ProtocolError, match=r"env_db\.bpfi"):
        proto.validate_indicators(doc)
    with pytest.raises(ProtocolError):
        proto.parse_indicators(b"[1, 2]")


# -- config --------------------------------------------------------------------------------------

def test_config_defaults_and_overrides() -> None:
    cfg = load_agent_config(None, env={"EDGEVIB_INDICATORS__INTERVAL_S": "30"}, site="s", gateway="g",
                            sensors={"fan": {"iso_group": 1, "iso_foundation": "flexible"}})
    assert cfg.indicators.enabled is True and cfg.indicators.interval_s == 30.0
    assert (cfg.sensor("fan").iso_group, cfg.sensor("fan").iso_foundation) == (1, "flexible")
    assert (cfg.sensor("other").iso_group, cfg.sensor("other").iso_foundation) == (2, "rigid")


@pytest.mark.parametrize(("over", "needle"), [
    ({"sensors": {"fan": {"iso_group": 3}}}, "iso_group=3"),
    ({"sensors": {"fan": {"iso_foundation": "soft"}}}, "iso_foundation='soft'"),
    ({"indicators": {"interval_s": 0}}, "indicators.interval_s=0"),
])
def test_config_errors_name_key_value_and_fix(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(None, env={}, site="s", gateway="g", **over)
    assert needle in str(err.value) and "fix:" in str(err.value)


# -- the agent -----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _normal_model() -> FunctionModel:
    def fn(x: np.ndarray) -> np.ndarray:
        p = np.full((len(x), 10), 0.01, np.float32)
        p[:, 0] = 0.91
        return p

    return FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="fixed"), fn, name="fixed")


def test_agent_publishes_indicators_per_sensor_per_interval(tmp_path: Path) -> None:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600,
                            alert={"anomaly": False}, indicators={"interval_s": 1.0},
                            sensors={"a": {"asset": "pump-1"},
                                     "b": {"iso_group": 1, "iso_foundation": "flexible", "speed_estimate": False}},
                            outbox={"path": str(tmp_path / "o.sqlite")})
    agent = Agent(cfg, _normal_model(), MemoryLink(bus, "agent", clock=clock), Outbox(cfg.outbox.path), clock=clock)
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.indicators)
    tx = MemoryLink(bus, "tx")
    rng = np.random.default_rng(0)
    signals = {"a": _sine(100.0, 0.5, 6.0) + 0.01 * rng.standard_normal(int(6 * FS)),  # 5.52 mm/s
               "b": _sine(50.0, 0.2, 6.0) + 0.01 * rng.standard_normal(int(6 * FS))}  # 4.41 mm/s
    frame = 1200  # 0.1 s; the agent's clock follows the signal
    for i in range(60):
        for name, x in signals.items():
            f = Frame(i, 10**18 + round(i * frame * 1e9 / FS), FS, x[i * frame:(i + 1) * frame].astype(np.float32))
            tx.publish(T.raw(name), encode(f, "float32"))
        agent.step()
        agent.step()
        clock.t += 0.1
    docs = [proto.parse_indicators(m.payload) for m in iter(lambda: cloud.poll(0), None)]
    by = {n: [d for d in docs if d["sensor"] == n] for n in signals}
    # the first once 2 s of signal are in (after frame 20, agent time 1001.9), then one per 1 s
    # of agent time up to 1005.9: 5 per sensor
    assert [len(by["a"]), len(by["b"])] == [5, 5], [(d["sensor"], d["t_ns"]) for d in docs]
    for d in by["a"]:
        assert d["vel_rms_mm_s"] == pytest.approx(_analytic_mm_s(100.0, 0.5), rel=0.01)
        assert d["iso_zone"] == "D" and (d["iso_group"], d["iso_foundation"]) == (2, "rigid")
        assert d["asset"] == "pump-1" and d["acc_rms_g"] == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    for d in by["b"]:
        assert d["vel_rms_mm_s"] == pytest.approx(_analytic_mm_s(50.0, 0.2), rel=0.01)
        assert d["iso_zone"] == "B" and (d["iso_group"], d["iso_foundation"]) == (1, "flexible")
        assert d["rpm"] == 1797.0 and d["rpm_source"] == "configured" and d["anomaly_ratio"] is None
    # signal time at the end of the stretch: 1 s apart, within the 6 s sent
    t = [d["t_ns"] for d in by["a"]]
    assert all(b - a == pytest.approx(1e9, abs=0.2e9) for a, b in zip(t, t[1:], strict=False))
    assert 10**18 + 1.8e9 <= t[0] and t[-1] <= 10**18 + 6e9
    assert agent.metrics.counters["indicators_sent"] == 10


def test_agent_sends_no_indicators_when_disabled(tmp_path: Path) -> None:
    bus, clock = MemoryBus(), Clock()
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600,
                            indicators={"enabled": False, "interval_s": 0.5},
                            outbox={"path": str(tmp_path / "o.sqlite")})
    agent = Agent(cfg, _normal_model(), MemoryLink(bus, "agent", clock=clock), Outbox(cfg.outbox.path), clock=clock)
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.indicators)
    tx = MemoryLink(bus, "tx")
    x = _sine(100.0, 0.5, 3.0).astype(np.float32)
    for i in range(30):
        tx.publish(T.raw("a"), encode(Frame(i, 10**18 + i * 10**8, FS, x[i * 1200:(i + 1) * 1200]), "float32"))
        agent.step()
        clock.t += 0.1
    assert cloud.poll(0) is None and "indicators_sent" not in agent.metrics.counters
