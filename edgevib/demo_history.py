"""The demo's seeded history: hours of condition indicators (and evidence windows) published
before the live part starts, so the dashboard has trends, level crossings and a waterfall to
show within a minute.

What it tells (``HOURS`` up to now, one reading every ``STEP_S``):

* ``motor`` drifts out of zone B: 1x-shaft vibration (unbalance, loosening) grows until the
  velocity RMS crosses the ISO 10816-3 zone C boundary (warning) and, in the last
  ``ALARM_MIN`` minutes, zone D (alarm);
* ``pump`` develops the demo's bearing fault: the same velocity (a bearing defect barely moves
  it), but kurtosis and the envelope at the fault frequency grow over the last hour; its
  evidence windows (one every ``EVIDENCE_EVERY_S``) show the fault line rising in the
  waterfall, and the live pump then raises the alert;
* the healthy ``fan-*`` sensors: steady zone B.

Everything goes through the real path (MQTT -> bridge -> Flink job -> store): the indicators are
computed by the edge's own code (:func:`edgevib.edge.indicators.compute`) on simulated signals
(:class:`edgevib.edge.stream.Simulator`), published in time order, oldest first, before the
agent starts, so the job's event time runs through the history and then on into the live data.

>>> docs, windows = history_messages("demo", "gw1", ["fan-0"], "OR", now_ns=10**18, hours=0.2)
>>> {d["sensor"] for d in docs} == {"fan-0", "motor", "pump"}, [d["t_ns"] for d in docs] == sorted(d["t_ns"] for d in docs)
(True, True)
>>> [d["iso_zone"] for d in docs if d["sensor"] == "motor"][-1]
'D'
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HOURS = 6.0
STEP_S = 180.0  # one reading per sensor every 3 min: 120 per sensor over 6 h
FS = 12000.0
RPM = 1797.0
SECONDS = 1.0  # of signal per reading
ALARM_MIN = 12.0
FAULT_HOURS = 1.0
EVIDENCE_EVERY_S = 300.0
MODEL = {"name": "demo-history", "version": "0", "sha256": "0" * 64}


def _motor_vel(frac: float, hours: float) -> float:
    """Target velocity RMS (mm/s) at ``frac`` (0..1) of the history: zone B, then a drift through C into D."""
    left_min = (1.0 - frac) * hours * 60.0
    if left_min <= ALARM_MIN:
        return 4.3 + 0.6 * (1.0 - left_min / ALARM_MIN)  # past the C/D boundary (4.5, group 2 rigid)
    return 1.9 + 2.2 * max(0.0, (frac - 0.35) / 0.65) ** 2


def history_messages(site: str, gateway: str, fans: list[str], fault: str, *, now_ns: int, hours: float = HOURS,
                     seed: int = 7) -> tuple[list[dict[str, Any]], list[Any]]:
    """Indicator documents (time order) and evidence records (time order) of the seeded history."""
    from edgevib.edge.indicators import compute  # noqa: PLC0415 - numpy/scipy only when seeding
    from edgevib.edge.stream import Simulator  # noqa: PLC0415
    from edgevib.models.bearing import CWRU_DE_6205  # noqa: PLC0415
    from edgevib.models.orders import fault_frequencies  # noqa: PLC0415
    from edgevib.protocol import make_indicators  # noqa: PLC0415
    from edgevib.protocol.evidence import EvidenceRecord  # noqa: PLC0415

    fh = fault_frequencies(CWRU_DE_6205, RPM)
    n = int(FS * SECONDS)
    rng = np.random.default_rng(seed)
    sims = {s: Simulator("normal", fs=FS, rpm=RPM, seed=seed + i) for i, s in enumerate([*fans, "motor", "pump"])}
    faulty = Simulator(fault, fs=FS, rpm=RPM, seed=seed + 100)
    shaft = np.sin(2 * np.pi * (RPM / 60.0) * np.arange(n) / FS)
    unit = 1.0 * np.sqrt(2) * 2 * np.pi * (RPM / 60.0) / 9806.65 * shaft  # the 1x sine of 1 mm/s RMS, in g
    s_unit = compute(unit, FS, fh).vel_rms_mm_s
    steps = max(2, int(hours * 3600 / STEP_S))
    t_start = now_ns - int(hours * 3600e9)
    docs: list[dict[str, Any]] = []
    windows: list[Any] = []
    next_evidence = t_start + int((hours - FAULT_HOURS) * 3600e9) if hours > FAULT_HOURS else t_start
    for k in range(steps):
        t_ns = t_start + int(k * STEP_S * 1e9)
        frac = k / (steps - 1)
        fault_w = max(0.0, 1.0 - (now_ns - t_ns) / (FAULT_HOURS * 3600e9))  # 0 until the last hour, then up to 1
        for sensor, sim in sims.items():
            x = sim.next_samples(n)
            if sensor == "motor":
                # a 1x-shaft sine whose amplitude brings the velocity RMS to the target: v(a)^2 is
                # quadratic in a (the sine may be partly in phase with the simulator's own 1x)
                want = _motor_vel(frac, hours) * (1 + 0.02 * rng.standard_normal())
                v0, v1 = compute(x, FS, fh).vel_rms_mm_s, compute(x + unit, FS, fh).vel_rms_mm_s
                # v(a)^2 = v0^2 + 2 a c + a^2 s^2, with s the velocity of the unit sine alone
                c = (v1**2 - v0**2 - s_unit**2) / 2
                disc = c * c - s_unit**2 * (v0**2 - want**2)
                a = max(0.0, (-c + np.sqrt(max(disc, 0.0))) / s_unit**2)
                x = x + a * unit
            elif sensor == "pump" and fault_w > 0:
                x = (1 - fault_w) * x + fault_w * faulty.next_samples(n)
            ind = compute(x, FS, fh)
            docs.append(make_indicators(site=site, gateway=gateway, sensor=sensor, t_ns=t_ns, sample_rate=FS,
                                        iso_group=2, iso_foundation="rigid", rpm=RPM, rpm_source="configured",
                                        **ind.fields()))
            if sensor == "pump" and t_ns >= next_evidence:
                next_evidence = t_ns + int(EVIDENCE_EVERY_S * 1e9)
                p = min(0.99, 0.05 + fault_w)
                windows.append(EvidenceRecord.build(
                    site=site, gateway=gateway, sensor=sensor, t_ns=t_ns, rpm=RPM, sample_rate=FS, reason="healthy_sample",
                    alert_id=None, probs={"normal": 1 - p, f"{fault}021" if fault != "B" else "B021": p}, model=MODEL,
                    window=x, bearing=CWRU_DE_6205))
    docs.sort(key=lambda d: d["t_ns"])
    return docs, windows


def expected_crossings(docs: list[dict[str, Any]], levels: Any) -> set[str]:
    """Ids of the level crossings the job will store for ``docs`` (a ``LevelLogic``), per sensor in time order."""
    state: dict[str, Any] = {}
    ids: set[str] = set()
    for d in docs:
        key = f"{d['site']}/{d['gateway']}/{d['sensor']}"
        rec = {"site": d["site"], "gateway": d["gateway"], "sensor": d["sensor"], "asset": d.get("asset"),
               "ev_ms": d["t_ns"] // 1_000_000, **{k: d[k] for k in ("vel_rms_mm_s", "iso_zone", "iso_group",
                                                                      "iso_foundation")}}
        state[key], out = levels.on_indicator(state.get(key), key, rec)
        ids |= {r["id"] for _, _, r in out}
    return ids


def publish_history(link: Any, site: str, gateway: str, fans: list[str], fault: str, *, now_ns: int,
                    hours: float = HOURS, levels: Any = None) -> tuple[int, int, set[str]]:
    """Publish the history on ``link`` (an MqttLink, QoS 1): (indicator messages, evidence windows,
    ids of the level crossings the job will store for them with ``levels``, a ``LevelLogic``)."""
    from edgevib.protocol import Topics, dumps  # noqa: PLC0415
    from edgevib.protocol.evidence import encode  # noqa: PLC0415

    topics = Topics(site, gateway)
    docs, windows = history_messages(site, gateway, fans, fault, now_ns=now_ns, hours=hours)
    for d in docs:
        link.publish(topics.indicators, dumps(d), qos=1)
    for w in windows:
        link.publish(topics.evidence, encode(w), qos=1)
    return len(docs), len(windows), (expected_crossings(docs, levels) if levels is not None else set())
