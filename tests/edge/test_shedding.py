"""Latency budget (edge/shedding.py): an overloaded agent thins overlapping windows and keeps
alert latency bounded; below overload, or with the budget off, it infers every window.

The agent runs on agent time: the model advances the clock by a cost per window, frames are
stamped when the sensors sent them, so a window's latency includes its wait in the inbox, as
on a gateway whose one core is busy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.model import FunctionModel
from edgevib.edge.outbox import Outbox
from edgevib.edge.shedding import (
    BATCH_SHARE,
    BUSY,
    HIGH,
    HOLD_S,
    MARGIN,
    MIN_BATCH,
    SATURATED,
    Thinner,
)
from edgevib.models.classes import CLASSES_10
from edgevib.models.contract import ModelMeta

from edgevib import protocol as proto
from edgevib.errors import ConfigError
from edgevib.protocol.frames import Frame, encode

FS, FRAME = 12000.0, 1200  # 0.1 s frames
T = proto.Topics("plant", "gw")
IR = CLASSES_10.index("IR007")


def _run(tmp_path: Path, *, sensors: int, cost_s: float, budget_ms: float,
         seconds: float = 12.0, reads: bool = False, sizes: list[int] | None = None) -> tuple[Agent, list[bytes]]:
    """``sensors`` x ``seconds`` of 12 kHz signal in real-time frames, each sensor at its own
    phase of the 0.1 s frame period; the model (window 2048, hop 256: 46.9 windows per sensor-
    second) costs ``cost_s`` of agent time per window and names IR. ``reads``: speed estimates
    and indicator sets on (their own cost is not on the agent clock). ``sizes`` collects the
    batch sizes the model saw."""
    bus, t = MemoryBus(), [1000.0]
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", heartbeat_s=3600, latency_budget_ms=budget_ms,
                            alert={"anomaly": False}, indicators={"enabled": reads},
                            default={"speed_estimate": reads}, outbox={"path": str(tmp_path / "ob.sqlite")})

    def slow(x: np.ndarray) -> np.ndarray:
        t[0] += cost_s * len(x)
        if sizes is not None:
            sizes.append(len(x))
        return np.tile(np.eye(10, dtype=np.float32)[IR], (len(x), 1))

    model = FunctionModel(ModelMeta(CLASSES_10, window=2048, hop=256, arch="slow"), slow, name="slow")
    agent = Agent(cfg, model, MemoryLink(bus, "agent", clock=lambda: t[0]), Outbox(cfg.outbox.path),
                  clock=lambda: t[0])
    cloud, src = MemoryLink(bus, "cloud"), MemoryLink(bus, "sensor")
    cloud.subscribe(T.alerts)
    noise = np.random.default_rng(0).normal(size=(16, FRAME)).astype(np.float32)
    period, end = FRAME / FS, t[0] + seconds
    sends = [(t[0] + i * period / sensors, i, 0) for i in range(sensors)]  # (due, sensor, frame), in time order
    while sends or agent.link.stats()["depth"] or agent._pending:
        while sends and sends[0][0] <= t[0]:  # what the sensors sent by now, stamped when sent
            due, i, k = sends.pop(0)
            busy, t[0] = t[0], due
            f = Frame(k, 10**18 + round(k * FRAME * 1e9 / FS), FS, noise[(i + k) % 16])
            src.publish(T.raw(f"s{i}"), encode(f, "float32"))
            t[0] = busy
            if due + period < end:
                sends.append((due + period, i, k + 1))
        if not agent.link.stats()["depth"]:  # idle: the next frame, or the open batch's deadline
            wake = min(sends[0][0] if sends else float("inf"),
                       agent._pending[0].arrived + cfg.batch_deadline_ms / 1000 + 1e-6 if agent._pending
                       else float("inf"))
            t[0] = max(t[0], wake)
        agent.step()
    agent.deliver()
    return agent, [m.payload for m in iter(lambda: cloud.poll(0), None)]


def _counters(agent: Agent) -> dict[str, float]:
    return agent.heartbeat()["counters"]  # type: ignore[no-any-return]


def test_overload_without_a_budget_queues_without_bound(tmp_path: Path) -> None:
    agent, _ = _run(tmp_path, sensors=48, cost_s=0.0006, budget_ms=0.0, seconds=8.0)  # 1.35 s of work per second
    c = _counters(agent)
    assert c.get("windows_thinned", 0) == 0 and c["thin_factor"] == 1
    assert c["windows"] == sum(s.cut for s in agent.sensors.values())  # every window inferred
    assert c["latency_p99_ms"] > 500  # the backlog grew for the whole run


def test_overload_with_a_budget_thins_and_keeps_latency_bounded(tmp_path: Path) -> None:
    agent, alerts = _run(tmp_path, sensors=48, cost_s=0.0006, budget_ms=50.0, seconds=8.0)
    c = _counters(agent)
    cut = sum(s.cut for s in agent.sensors.values())
    assert c["windows_thinned"] > 0 and c["windows"] + c["windows_thinned"] == cut
    assert c["windows"] >= cut / 4  # at most every 4th (window // (2 x hop)) is left out
    assert c["latency_p99_ms"] <= 60, c  # the budget (50) and one batch's overshoot
    raised = {proto.parse_alert(p)["sensor"] for p in alerts if proto.parse_alert(p)["state"] == "raised"}
    assert raised == set(agent.sensors) and len(raised) == 48  # thinned windows still raise every sensor's alert


def test_below_overload_a_budget_thins_only_the_start(tmp_path: Path) -> None:
    agent, alerts = _run(tmp_path, sensors=24, cost_s=0.0006, budget_ms=50.0, seconds=6.0)  # 68 % busy
    (tmp_path / "off").mkdir()
    off, alerts_off = _run(tmp_path / "off", sensors=24, cost_s=0.0006, budget_ms=0.0, seconds=6.0)
    c, c_off = _counters(agent), _counters(off)
    assert c["thin_factor"] == 1 and c["thin_changes"] == 2  # started at 4 (2048 // (2 x 256)), halved twice
    per_s = 24 * FS / 256  # windows cut per second
    assert 0 < c["windows_thinned"] <= 0.75 * per_s * (2 * HOLD_S + 0.5)  # none after the first ~2 s
    assert c_off["windows"] == sum(s.cut for s in off.sensors.values()) == c["windows"] + c["windows_thinned"]
    assert c["latency_p99_ms"] <= 50 and c_off["latency_p99_ms"] <= 50

    def raised(payloads: list[bytes]) -> set[str]:
        return {a["sensor"] for a in map(proto.parse_alert, payloads) if a["state"] == "raised"}

    assert raised(alerts) == raised(alerts_off) == set(agent.sensors)


def _steps(th: Thinner, t: list[float], seconds: float, busy: float, inference: float) -> None:
    """``seconds`` of 10 ms steps at the given shares of the core."""
    for _ in range(round(seconds / 0.01)):
        t[0] += 0.01
        if inference:
            th.batched(4, inference * 0.01)  # windows flow: load, not an idle agent
        th.work(busy * 0.01, inference * 0.01)


def test_with_a_budget_reads_leave_batch_steps_but_keep_their_rate(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    deferred: list[bool] = []
    step = Agent.step

    def recording(self: Agent, max_messages: int = 256) -> None:
        step(self, max_messages)
        deferred.append(self._deferred)

    monkeypatch.setattr(Agent, "step", recording)
    counts = []
    for budget in (50.0, 0.0):
        (tmp_path / str(budget)).mkdir()
        deferred.clear()
        agent, _ = _run(tmp_path / str(budget), sensors=24, cost_s=0.0006, budget_ms=budget, seconds=13.0, reads=True)
        c = _counters(agent)
        counts.append((c.get("speed_estimates", 0) + c.get("speed_refused", 0), c["indicators_sent"]))
        if budget:  # reads left a batch step, never two steps in a row
            assert sum(deferred) > 100 and not any(a and b for a, b in zip(deferred, deferred[1:], strict=False))
        else:
            assert not any(deferred)
    assert counts[0] == counts[1] and counts[0][0] >= 24 * 2 and counts[0][1] >= 24  # every read due was made


def test_thinner_thins_only_a_saturated_core_and_backs_off_when_twice_the_inference_fits() -> None:
    t = [0.0]
    th = Thinner(50.0, clock=lambda: t[0])
    _steps(th, t, 3.0, busy=0.6, inference=0.3)
    assert th.busy == pytest.approx(0.6, abs=0.01) and th.inference == pytest.approx(0.3, abs=0.01)
    th.observe(500.0, arrived=t[0], most=4)  # slow, but the core has room: thinning would not help
    assert th.factor == 1
    _steps(th, t, 3.0, busy=1.0, inference=0.7)
    th.observe(39.0, arrived=t[0], most=4)  # saturated, but under HIGH x budget
    assert th.factor == 1
    th.observe(45.0, arrived=t[0], most=4)
    assert th.factor == 2
    th.observe(80.0, arrived=t[0] - 0.001, most=4)  # cut before the change: no new evidence
    assert th.factor == 2
    t[0] += 0.01
    th.observe(80.0, arrived=t[0], most=4)
    assert th.factor == 4
    t[0] += 0.01
    th.observe(500.0, arrived=t[0], most=4)  # capped at most
    assert th.factor == 4 and th.changes == 2
    _steps(th, t, 3.0, busy=0.55, inference=0.3)  # 0.85 > BUSY: twice the inference would not fit
    assert th.factor == 4
    _steps(th, t, 3.0, busy=0.45, inference=0.3)  # 0.75: halve once per HOLD_S
    assert th.factor == 1 and th.changes == 4
    slow = Thinner(50.0, clock=lambda: t[0], start=4)  # the agent's start: the largest factor
    assert slow.factor == 4 and not slow.keep(1)
    _steps(slow, t, 1.5, busy=0.1, inference=0.05)
    assert slow.factor == 2  # not before HOLD_S
    _steps(slow, t, 1.0, busy=0.1, inference=0.05)
    assert slow.factor == 1
    assert (HIGH, SATURATED, BUSY, HOLD_S, MARGIN) == (0.8, 0.7, 0.8, 1.0, 0.1)
    slow.factor = 4
    slow.observe(10.0, arrived=t[0], most=2)  # a model that allows less: clamped at once
    assert slow.factor == 2


def test_a_load_too_slow_unthinned_stays_thinned_until_it_falls() -> None:
    """Raised at 75 % busy: halving back would bring the same 75 %, so it waits for the load to fall."""
    t = [0.0]
    th = Thinner(50.0, clock=lambda: t[0])
    _steps(th, t, 2.0, busy=0.75, inference=0.6)
    th.observe(60.0, arrived=t[0], most=4)  # over HIGH x budget at busy >= SATURATED
    assert th.factor == 2 and 0.75 >= SATURATED
    _steps(th, t, 5.0, busy=0.45, inference=0.3)  # 0.75 <= BUSY, but over 0.75 - MARGIN
    assert th.factor == 2 and 0.45 + 0.3 > 0.75 - MARGIN
    _steps(th, t, 0.5, busy=0.3, inference=0.2)  # the load falls: calm, but not yet for HOLD_S
    assert th.factor == 2
    _steps(th, t, 1.5, busy=0.3, inference=0.2)
    assert th.factor == 1 and th.changes == 2


def test_an_agent_waiting_for_its_sensors_keeps_its_start_factor() -> None:
    t = [0.0]
    th = Thinner(50.0, clock=lambda: t[0], start=4)
    _steps(th, t, 5.0, busy=0.0, inference=0.0)  # idle: no batch, no evidence of the load to come
    assert th.factor == 4
    _steps(th, t, 0.9, busy=0.1, inference=0.05)  # windows flow, calm: halves HOLD_S after the first batch
    assert th.factor == 4
    _steps(th, t, 0.2, busy=0.1, inference=0.05)
    assert th.factor == 2
    free = Thinner(50.0, clock=lambda: t[0], start=2)  # batches that cost no time (a clock that
    free.batched(4, 0.0)  # did not move) are still load: the idle rule must not hold it at 2
    assert free.per_window_s == 0.0 and free.batch_limit(32) == 32
    for _ in range(120):
        t[0] += 0.01
        free.work(0.001, 0.0)
    assert free.factor == 1


def test_one_dip_of_the_shares_does_not_halve() -> None:
    t = [0.0]
    th = Thinner(50.0, clock=lambda: t[0], start=2)
    _steps(th, t, 0.5, busy=1.0, inference=0.5)  # the shares start at 0: lift them past BUSY first
    _steps(th, t, 3.0, busy=0.6, inference=0.3)  # 0.9: no halving
    _steps(th, t, 0.3, busy=0.2, inference=0.1)  # a short dip under BUSY
    _steps(th, t, 2.0, busy=0.6, inference=0.3)
    assert th.factor == 2 and th.changes == 0


def test_batch_limit_fits_a_share_of_the_budget_at_the_measured_cost() -> None:
    th = Thinner(50.0, clock=lambda: 0.0)
    assert th.batch_limit(32) == 32  # nothing timed yet: the configured size
    th.batched(32, 32 * 0.0005)  # 0.5 ms per window: 0.3 x 50 ms holds 30
    assert th.batch_limit(32) == int(BATCH_SHARE * 0.050 / 0.0005) == 30
    for _ in range(40):  # a model twice as slow: the moving average follows
        th.batched(30, 30 * 0.001)
    assert th.batch_limit(32) == 15
    for _ in range(40):
        th.batched(4, 4 * 0.02)  # 20 ms per window: never under MIN_BATCH
    assert th.batch_limit(32) == MIN_BATCH and th.batch_limit(2) == 2
    off = Thinner(0.0, clock=lambda: 0.0)
    off.batched(32, 1.0)
    assert off.batch_limit(32) == 32  # no budget: batches as configured


def test_with_a_budget_batches_hold_what_fits_it(tmp_path: Path) -> None:
    """1.2 ms per window: 32 windows would take 38 ms of a 50 ms budget; batches hold 12."""
    sizes: list[int] = []
    agent, _ = _run(tmp_path, sensors=24, cost_s=0.0012, budget_ms=50.0, seconds=4.0, sizes=sizes)
    assert _counters(agent)["batch_limit"] == int(BATCH_SHARE * 50.0 / 1.2) == 12
    assert max(sizes[1:]) == 12 and sizes[0] <= 32  # the first batch, before any was timed
    (tmp_path / "off").mkdir()
    sizes_off: list[int] = []
    off, _ = _run(tmp_path / "off", sensors=24, cost_s=0.0012, budget_ms=0.0, seconds=4.0, sizes=sizes_off)
    assert "batch_limit" not in _counters(off) and max(sizes_off) == 32  # off: the configured size


def test_windows_later_than_the_budget_are_counted(tmp_path: Path) -> None:
    fast, _ = _run(tmp_path, sensors=4, cost_s=0.0001, budget_ms=50.0, seconds=2.0)
    c = _counters(fast)
    assert c["windows"] > 0 and c.get("windows_late", 0) == 0 and c["latency_p99_ms"] <= 50
    (tmp_path / "slow").mkdir()  # 60 ms per window: every window is over the budget
    slow, _ = _run(tmp_path / "slow", sensors=1, cost_s=0.060, budget_ms=50.0, seconds=2.0)
    c = _counters(slow)
    assert c["windows"] > 0 and c["windows_late"] == c["windows"] and c["latency_p50_ms"] > 50


@pytest.mark.parametrize("budget", [-1.0, 10.0, float("nan"), float("inf")])
def test_bad_budget_is_refused_with_the_fix(budget: float) -> None:
    with pytest.raises(ConfigError) as e:
        load_agent_config(None, env={}, latency_budget_ms=budget)  # the batch deadline is 20 ms
    assert "latency_budget_ms" in str(e.value) and "above the batch deadline" in str(e.value)


def test_budget_from_the_environment() -> None:
    cfg = load_agent_config(None, env={"EDGEVIB_LATENCY_BUDGET_MS": "50"})
    assert cfg.latency_budget_ms == 50.0
