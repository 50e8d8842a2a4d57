"""Shaft speed from the spectrum (edge/speed.py): synthetic cases, bad input, four real rigs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import RPM_SOURCES, Agent
from edgevib.edge.config import SensorConfig, load_agent_config
from edgevib.edge.errors import EdgeError
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import Outbox
from edgevib.edge.speed import SpeedError, estimate_speed
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.errors import ConfigError
from edgevib.protocol.frames import Frame, encode

FS = 12000.0
T = proto.Topics("plant", "gw")


def family(rpm: float, seconds: float = 2.0, *, fs: float = FS, amps: tuple[float, ...] = (1, .6, .4, .3, .2),
           noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Shaft harmonics of ``rpm`` with amplitudes ``amps`` in white noise."""
    t = np.arange(int(seconds * fs)) / fs
    x = sum(a * np.sin(2 * np.pi * (h + 1) * rpm / 60 * t + h) for h, a in enumerate(amps))
    return x + np.random.default_rng(seed).normal(0, noise, t.size)


@pytest.mark.parametrize("true", [1650.0, 1730.0, 1797.0, 1950.0])
def test_finds_a_shaft_family_off_the_nominal_speed(true: float) -> None:
    est = estimate_speed(family(true), FS, nominal_rpm=1797.0)
    assert est is not None
    assert abs(est.rpm - true) / true < 0.002
    assert est.harmonics_used >= 4 and est.quality > 4


def test_gain_free_and_deterministic() -> None:
    x = family(1730.0, seed=3)
    a, b, c = (estimate_speed(v, FS, 1797.0) for v in (x, 1e-4 * x, x.copy()))
    assert a is not None and b is not None and c is not None
    assert a.rpm == pytest.approx(b.rpm, rel=1e-9) and a == c


def test_noise_alone_is_refused() -> None:
    for seed in range(5):
        assert estimate_speed(np.random.default_rng(seed).normal(size=int(2 * FS)), FS, 1797.0) is None


def test_estimate_stays_in_the_search_range() -> None:
    # The true speed is outside nominal +- 5 %: no answer beats a wrong one at the edge.
    est = estimate_speed(family(1500.0), FS, 1797.0, search=0.05)
    assert est is None or abs(est.rpm / 1797.0 - 1) <= 0.05


def test_mains_lines_do_not_pull_the_speed_to_30_hz() -> None:
    # Weak shaft lines at 28.5 Hz under strong 60/120/180 Hz mains lines (a 30 Hz "family").
    t = np.arange(int(2 * FS)) / FS
    x = family(1710.0, amps=(.5, .3, .25, .2, .15), seed=1)
    x = x + sum(4 * np.sin(2 * np.pi * m * t) for m in (60.0, 120.0, 180.0, 240.0))
    est = estimate_speed(x, FS, 1797.0)
    assert est is not None and abs(est.rpm - 1710.0) < 5


def test_a_denser_cage_family_does_not_pose_as_the_shaft() -> None:
    # Outer-race faults on CWRU carry lines at every FTF (0.398 x shaft): 2 and 3 FTF lie
    # within +-20 % of the shaft speed and see a full family at their harmonics.
    t = np.arange(int(2 * FS)) / FS
    shaft = 1772.0 / 60
    x = family(1772.0, amps=(1, .5, .4), seed=2)
    x = x + sum(.8 * np.sin(2 * np.pi * k * 0.398 * shaft * t) for k in range(1, 26))
    for nominal in (1772 * 1.08, 1772 * 0.93):
        est = estimate_speed(x, FS, nominal)
        assert est is not None and abs(est.rpm - 1772.0) < 10, (nominal, est)


@pytest.mark.parametrize("fault", ["normal", "IR", "OR", "B"])
def test_simulated_bearing_at_an_unexpected_speed(fault: str) -> None:
    x = simulate(fault, fs=FS, duration_s=2.0, rpm=1700.0, seed=4)
    est = estimate_speed(x, FS, 1797.0)
    assert est is not None and abs(est.rpm - 1700.0) / 1700.0 < 0.01


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"x": np.zeros(1000)}, "samples"),
    ({"x": np.zeros((2, 24000))}, "shape"),
    ({"x": np.r_[np.zeros(23999), np.nan]}, "NaN"),
    ({"fs": 0.0}, "fs="),
    ({"nominal_rpm": -5.0}, "nominal_rpm="),
    ({"nominal_rpm": 60_000.0}, "harmonics under"),
    ({"search": 0.4}, "search="),
    ({"harmonics": 1}, "harmonics="),
])
def test_bad_input_names_the_value_and_the_fix(kwargs: dict[str, object], bad: str) -> None:
    args: dict[str, object] = {"x": family(1797.0), "fs": FS, "nominal_rpm": 1797.0, **kwargs}
    with pytest.raises(SpeedError) as ei:
        estimate_speed(**args)  # type: ignore[arg-type]
    assert isinstance(ei.value, EdgeError)
    assert ei.value.component == "edge.speed" and bad in ei.value.problem and ei.value.fix


# -- the real recordings of four rigs ---------------------------------------------------------
SECONDS = 2.0  # what the agent holds per sensor (edge/agent.py: history 2 s at the model's 12 kHz)
STRETCHES = 3  # per recording, consecutive and disjoint
NOMINALS = (1.08, 0.93)  # configured speed off the true one, both ways
# Measured (edge/speed.py at commit time, 2 s at 12 kHz): share of stretches within 1 % of the
# recorded speed, refusals counting as misses. Recorded speeds are themselves approximate:
# HIT's are set points (the 1x line sits up to ~1 % above them at 600 rpm) and CWRU file 158
# (OR007@12, load 1, 1773 rpm recorded) shows a clear 1797 rpm family.
# Asserted a few points under the measurement, so a real regression fails.
MIN_WITHIN_1PCT = {"cwru": 0.95, "hit-sq": 0.88, "hit-sb": 0.92, "mfpt": 0.82}
MIN_ALL = 0.93
MAX_GROSS = 0.05  # answers more than 3 % off: a wrong speed is worse than none


def _to_12k(x: np.ndarray, fs: float) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    r = Fraction(int(FS), int(round(fs))).limit_denominator(1000)
    return x if r == 1 else resample_poly(x, r.numerator, r.denominator)


def _recordings(cwru_dir: Path, bearings_dir: Path) -> list[tuple[str, str, np.ndarray, float]]:
    out = []
    for rig, files in [("cwru", sorted(cwru_dir.glob("*.npz")))] + [
            (r, sorted((bearings_dir / r).glob("*.npz"))) for r in ("hit-sq", "hit-sb", "mfpt")]:
        assert files, f"no recordings of rig {rig}"
        for f in files:
            with np.load(f, allow_pickle=False) as d:
                rpm = float(d["rpm"])
                if not np.isfinite(rpm):  # CWRU 0.028-inch files: speed not recorded
                    continue
                out.append((rig, f.name, _to_12k(d["signal"].astype(np.float64), float(d["fs"])), rpm))
    return out


@pytest.mark.data
def test_speed_of_four_real_rigs_from_an_off_nominal_start(cwru_dir: Path, bearings_dir: Path) -> None:
    errs: dict[str, list[float]] = {}  # relative error in %, nan = refused
    n = int(SECONDS * FS)
    for rig, _name, x, rpm in _recordings(cwru_dir, bearings_dir):
        for s in range(0, min(x.size - n + 1, STRETCHES * n), n):
            for fac in NOMINALS:
                est = estimate_speed(x[s:s + n], FS, rpm * fac)
                errs.setdefault(rig, []).append(np.nan if est is None else abs(est.rpm - rpm) / rpm * 100)
    lines = [f"{'rig':7} {'n':>4} {'<=1%':>6} {'refused':>8} {'>3%':>6} {'median':>7} {'p95':>6}"]
    for rig, v in errs.items():
        a = np.array(v)
        ok = a[np.isfinite(a)]
        lines.append(f"{rig:7} {a.size:4d} {np.mean(a <= 1):6.1%} {np.mean(np.isnan(a)):8.1%} "
                     f"{np.mean(a > 3):6.1%} {np.median(ok):6.2f}% {np.percentile(ok, 95):5.2f}%")
    print("\nshaft speed from 2 s at 12 kHz, nominal x1.08 and x0.93:\n" + "\n".join(lines))
    assert set(errs) == set(MIN_WITHIN_1PCT)
    for rig, v in errs.items():
        a = np.array(v)
        assert np.mean(a <= 1) >= MIN_WITHIN_1PCT[rig], (rig, lines)
        assert np.mean(a > 3) <= MAX_GROSS, (rig, lines)
    every = np.concatenate([np.array(v) for v in errs.values()])
    assert np.mean(every <= 1) >= MIN_ALL, lines


# -- in the agent: no rpm_topic -> the estimate becomes the speed in use -----------------------
def _agent(tmp_path: Path, sensor: dict[str, object], *, sensors: dict[str, object] | None = None,
           **cfg_kw: object) -> tuple[Agent, MemoryLink, MemoryLink, list[float]]:
    """An agent on agent time ``t[0]`` with sensor ``de`` (or ``sensors``) and a constant model."""
    bus, t = MemoryBus(), [1000.0]
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600,
                            alert={"anomaly": False}, sensors=sensors or {"de": sensor},
                            outbox={"path": str(tmp_path / "ob.sqlite")}, **cfg_kw)
    model = FunctionModel(ModelMeta(CLASSES_10, window=2048, arch="const"),
                          lambda x: np.tile(np.eye(10, dtype=np.float32)[0], (len(x), 1)), name="const")
    agent = Agent(cfg, model, MemoryLink(bus, "agent", clock=lambda: t[0]), Outbox(cfg.outbox.path),
                  clock=lambda: t[0])
    cloud, src = MemoryLink(bus, "cloud"), MemoryLink(bus, "sensor")
    cloud.subscribe(T.heartbeat)
    return agent, cloud, src, t


def _stream(agent: Agent, src: MemoryLink, t: list[float], x: np.ndarray, frame: int = 1200) -> None:
    """Frames of 0.1 s, one per step; agent time runs with the signal."""
    for i in range(0, len(x) - frame + 1, frame):
        f = Frame(i // frame, 10**18 + round(i * 1e9 / FS), FS, x[i:i + frame].astype(np.float32))
        src.publish(T.raw("de"), encode(f, "float32"))
        agent.step()
        t[0] += frame / FS


def _last_heartbeat(agent: Agent, cloud: MemoryLink) -> dict[str, object]:
    agent.heartbeat()
    msgs = [m for m in iter(lambda: cloud.poll(0), None) if m.topic == T.heartbeat]
    return proto.parse_heartbeat(msgs[-1].payload)["sensors"]["de"]  # type: ignore[no-any-return]


def test_agent_uses_and_reports_the_estimated_speed(tmp_path: Path) -> None:
    agent, cloud, src, t = _agent(tmp_path, {"rpm": 1797.0})
    _stream(agent, src, t, simulate("OR", fs=FS, duration_s=7.5, rpm=1700.0, seed=5))
    hb = _last_heartbeat(agent, cloud)
    assert hb["rpm_configured"] == 1797.0 and hb["rpm_source"] == RPM_SOURCES["estimated"]
    assert abs(hb["rpm_estimated"] - 1700.0) < 17  # type: ignore[operator]
    assert hb["rpm_in_use"] == hb["rpm_estimated"]
    assert hb["rpm_disagree_pct"] == pytest.approx((hb["rpm_estimated"] / 1797.0 - 1) * 100, abs=0.01)  # type: ignore[operator]
    s = agent.sensors["de"]
    assert s.evidence.rpm == s.rpm and abs(s.rpm - 1700.0) < 17
    # once 2 s are held (t ~ 2 s), then every speed_interval_s = 5 s: two in 7.5 s of signal
    assert hb.get("speed_estimates", 0) + hb.get("speed_refused", 0) == 2, hb


def test_agent_keeps_the_configured_speed_when_estimation_is_off_or_a_topic_gives_it(tmp_path: Path) -> None:
    x = simulate("normal", fs=FS, duration_s=3.0, rpm=1700.0, seed=6)
    agent, cloud, src, t = _agent(tmp_path, {"rpm": 1797.0, "speed_estimate": False})
    _stream(agent, src, t, x)
    hb = _last_heartbeat(agent, cloud)
    assert (hb["rpm_source"], hb["rpm_in_use"]) == (RPM_SOURCES["configured"], 1797.0)
    assert "rpm_estimated" not in hb and "speed_estimates" not in hb
    agent, cloud, src, t = _agent(tmp_path / "b", {"rpm": 1797.0, "rpm_topic": "plant/line1/rpm"})
    src.publish("plant/line1/rpm", b"1712.5")
    _stream(agent, src, t, x)
    hb = _last_heartbeat(agent, cloud)
    assert (hb["rpm_source"], hb["rpm_in_use"]) == (RPM_SOURCES["topic"], 1712.5)
    assert "rpm_estimated" not in hb


@pytest.mark.parametrize(("key", "value"), [("speed_search", 0.5), ("speed_search", 0.0),
                                            ("speed_interval_s", -1.0)])
def test_speed_config_errors_name_key_value_and_fix(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as ei:
        SensorConfig(**{key: value})  # type: ignore[arg-type]
    assert f"{key}={value!r}" in ei.value.problem and ei.value.fix


def test_speed_estimates_of_many_sensors_are_spread_over_the_interval(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """20 sensors that start together: beyond the first PACE_SENSORS, each sensor's first estimate
    is due at its own phase of the interval, and every later one an interval after the last, so
    the estimates stay spread (before: all 20 within ~20 steps after 2 s, and again every 5 s)."""
    import edgevib.edge.agent as agent_mod

    n, interval = 20, 5.0
    agent, _, src, t = _agent(tmp_path, {}, indicators={"enabled": False},
                              sensors={f"s{i}": {"rpm": 1797.0, "speed_interval_s": interval} for i in range(n)})
    when: list[tuple[float, str]] = []
    real = agent_mod.estimate_speed
    monkeypatch.setattr(agent_mod, "estimate_speed", lambda *a, **k: (when.append(t[0]), real(*a, **k))[1])
    x = simulate("normal", fs=FS, duration_s=17.0, rpm=1797.0, seed=7)
    frame = 1200
    for i in range(0, len(x) - frame + 1, frame):
        for k in range(n):
            f = Frame(i // frame, 10**18 + round(i * 1e9 / FS), FS, x[i:i + frame].astype(np.float32))
            src.publish(T.raw(f"s{k}"), encode(f, "float32"))
        for _ in range(10):  # many steps per 0.1 s, as a busy agent makes: the per-step cap alone spreads nothing
            agent.step()
            t[0] += 0.01
    assert n > agent_mod.PACE_SENSORS
    rel = np.array(when) - 1000.0
    first = np.sort(rel)[:n]
    # the first PACE_SENSORS at once after 2 s, the rest at their phases over the next interval
    assert (first[: agent_mod.PACE_SENSORS] < 3.0).all() and first[-1] - first[0] >= 0.5 * interval, first
    # steady state: the first PACE_SENSORS stay a block (of ~6 ms each, one per step), the rest
    # spread; before, all n came in one block
    per_s = np.histogram(rel[rel >= 8.0], bins=np.arange(8.0, 17.0, 1.0))[0]
    assert per_s.max() <= agent_mod.PACE_SENSORS + n / interval + 1 < n and per_s.min() >= 1, (per_s, rel)
    # every sensor served once per interval (none starved)
    assert len(rel[rel >= 8.0]) >= n * (17.0 - 8.0 - 1.0) / interval, rel
