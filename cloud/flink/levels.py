"""Level-crossing events per sensor: velocity RMS against warning and alarm levels, with hysteresis.

Kept free of pyflink so it can be unit-tested; :mod:`edgevib.cloud.flink.job` runs it inside its
keyed fleet operator, keyed ``levels:<site>/<gateway>/<sensor>``, state one JSON string per key.

Levels per sensor (``[levels]`` of the cloud config, :class:`~edgevib.cloud.config.LevelsConfig`):

* ``iso`` (default): ISO 10816-3 zones of the sensor's machine group and foundation, as the edge
  reports them with each indicator record: zone C (above the B/C boundary) is *warning*,
  zone D (above C/D) is *alarm* (:data:`edgevib.protocol.ISO_BOUNDARIES`).
* ``absolute:W:A``: warning above W mm/s, alarm above A mm/s.
* ``baseline:W:A``: warning above W x baseline, alarm above A x baseline, where the baseline is
  the median of the sensor's first ``baseline_n`` readings (learned in state; until then no
  events). A ``baseline`` event records what was learned.

A value exactly on a level stays below it (ISO's rule: a boundary belongs to the lower zone).

No event storm when a value hovers at a level: a level is entered only after ``confirm_n``
consecutive readings above it, and left only after ``confirm_n`` consecutive readings at or
below ``(1 - hysteresis)`` x the level. Duplicate or older readings (a replay) are ignored.

Outputs are ``("level_event", key, row)`` store records (table ``level_events``); each id names
the sensor, the time and the new level, so a replay from a checkpoint upserts the same rows.

>>> lg = LevelLogic(default=LevelSpec.parse("absolute:4:8"), confirm_n=2, hysteresis=0.1)
>>> st, seen = None, []
>>> for t, v in enumerate([3.0, 4.5, 3.9, 4.1, 4.2, 3.8, 3.7, 3.5, 3.5]):
...     st, out = lg.on_indicator(st, "p/g/s", {"site": "p", "gateway": "g", "sensor": "s", "ev_ms": t,
...                                             "vel_rms_mm_s": v, "iso_group": 2, "iso_foundation": "rigid"})
...     seen += [(r["ts_ms"], r["kind"], r["level"]) for _, _, r in out]
>>> seen
[(4, 'raised', 'warning'), (8, 'cleared', 'normal')]
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from edgevib.errors import ConfigError
from edgevib.protocol import ISO_BOUNDARIES

Record = tuple[str, str, dict[str, Any]]
State = dict[str, Any]

MODES = ("iso", "absolute", "baseline")
LEVELS = ("normal", "warning", "alarm")  # index = severity
FIGURE = "vel_rms_mm_s"  # the indicator compared (ISO's zones are defined on it)


@dataclass(frozen=True)
class LevelSpec:
    """How one sensor's levels are set: ``iso``, ``absolute:W:A`` (mm/s) or ``baseline:W:A`` (x baseline).

    >>> LevelSpec.parse("baseline:2:4")
    LevelSpec(mode='baseline', warning=2.0, alarm=4.0)
    >>> LevelSpec.parse("absolute:7:4")
    Traceback (most recent call last):
    edgevib.errors.ConfigError: levels: level spec 'absolute:7:4': warning 7, alarm 4; fix: use 0 < warning < alarm, e.g. absolute:4.5:7.1 or baseline:2:4
    """

    mode: str
    warning: float = 0.0
    alarm: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> LevelSpec:
        parts = [p.strip() for p in str(spec).split(":")]
        if parts[0] == "iso" and len(parts) == 1:
            return cls("iso")
        if parts[0] in ("absolute", "baseline") and len(parts) == 3:
            try:
                w, a = float(parts[1]), float(parts[2])
            except ValueError:
                w = a = -1.0
            if not 0 < w < a:
                raise ConfigError("levels", f"level spec {spec!r}: warning {parts[1]}, alarm {parts[2]}",
                                  "use 0 < warning < alarm, e.g. absolute:4.5:7.1 or baseline:2:4")
            if parts[0] == "baseline" and w <= 1:
                raise ConfigError("levels", f"level spec {spec!r}: warning factor {w} <= 1",
                                  "use factors of the baseline above 1, e.g. baseline:2:4")
            return cls(parts[0], w, a)
        raise ConfigError("levels", f"level spec {spec!r}",
                          "use 'iso', 'absolute:W:A' (mm/s) or 'baseline:W:A' (factors of the learned baseline)")


def parse_sensor_rules(rules: tuple[str, ...]) -> tuple[tuple[str, LevelSpec], ...]:
    """``("site/gw/sensor=absolute:3:6", "plant/*/pump*=baseline:2:4")`` -> (pattern, spec) pairs.

    >>> parse_sensor_rules(("demo/*/pump=baseline:2:4",))[0][0]
    'demo/*/pump'
    """
    out = []
    for r in rules:
        pattern, sep, spec = str(r).partition("=")
        if not sep or pattern.count("/") != 2:
            raise ConfigError("levels", f"levels.sensors entry {r!r}",
                              "write SITE/GATEWAY/SENSOR=SPEC (shell-style wildcards allowed), e.g. plant/gw1/pump=absolute:3:6")
        out.append((pattern.strip(), LevelSpec.parse(spec)))
    return tuple(out)


@dataclass(frozen=True)
class LevelLogic:
    """Per-sensor level state machine (see the module doc); ``rules``: first matching pattern wins."""

    default: LevelSpec = field(default_factory=lambda: LevelSpec("iso"))
    rules: tuple[tuple[str, LevelSpec], ...] = ()
    baseline_n: int = 30
    hysteresis: float = 0.1
    confirm_n: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise ConfigError("levels", f"hysteresis {self.hysteresis}", "use a fraction in [0, 1), e.g. 0.1")
        if self.confirm_n < 1 or self.baseline_n < 1:
            raise ConfigError("levels", f"confirm_n={self.confirm_n}, baseline_n={self.baseline_n}", "use counts >= 1")

    def spec_for(self, sensor_key: str) -> LevelSpec:
        for pattern, spec in self.rules:
            if fnmatch.fnmatchcase(sensor_key, pattern):
                return spec
        return self.default

    def levels(self, spec: LevelSpec, rec: dict[str, Any], baseline: float | None) -> tuple[float, float] | None:
        """(warning, alarm) in mm/s for this reading, or None (baseline not learned, unknown ISO class)."""
        if spec.mode == "iso":
            b = ISO_BOUNDARIES.get((int(rec.get("iso_group") or 0), str(rec.get("iso_foundation"))))
            return None if b is None else (b[1], b[2])
        if spec.mode == "absolute":
            return spec.warning, spec.alarm
        if baseline is None or baseline <= 0:
            return None
        return spec.warning * baseline, spec.alarm * baseline

    def _target(self, cur: int, v: float, w: float, a: float) -> int:
        up = 2 if v > a else 1 if v > w else 0
        if up > cur:
            return up
        # a level holds until the value falls to (1 - hysteresis) x that level
        h = 1.0 - self.hysteresis
        return min(cur, 2 if v > a * h else 1 if v > w * h else 0)

    def on_indicator(self, st: State | None, key: str, rec: dict[str, Any]) -> tuple[State, list[Record]]:
        """One indicator reading of sensor ``key`` (``site/gateway/sensor``): new state and events."""
        st = dict(st or {"level": 0})
        t, v = int(rec["ev_ms"]), rec.get(FIGURE)
        if v is None or t <= int(st.get("last_ms", -1)):
            return st, []  # no reading, or a duplicate / replayed older one
        v = float(v)
        st["last_ms"] = t
        spec = self.spec_for(key)
        out: list[Record] = []
        if spec.mode == "baseline" and st.get("baseline") is None:
            learn = [*st.get("learn", []), v]
            if len(learn) < self.baseline_n:
                st["learn"] = learn
                return st, out
            st.pop("learn", None)
            st["baseline"] = statistics.median(learn)
            out.append(self._event(key, rec, t, "baseline", 0, 0, st["baseline"], None, spec,
                                   {"n": len(learn), "baseline": st["baseline"]}))
        lv = self.levels(spec, rec, st.get("baseline"))
        if lv is None:
            return st, out
        cur = int(st.get("level", 0))
        target = self._target(cur, v, *lv)
        if target == cur:
            st.pop("streak", None)
            return st, out
        streak = st.get("streak")
        direction = 1 if target > cur else -1
        if streak is None or streak[0] != direction:
            streak = [direction, 0, target]
        # going up: the least level the whole streak exceeded; going down: the highest it stayed in
        streak = [direction, streak[1] + 1, min(streak[2], target) if direction > 0 else max(streak[2], target)]
        if streak[1] < self.confirm_n:
            st["streak"] = streak
            return st, out
        new = int(streak[2])
        st.pop("streak", None)
        st["level"], st["since_ms"] = new, t
        thr = lv[new - 1] if direction > 0 else lv[cur - 1] * (1.0 - self.hysteresis)
        out.append(self._event(key, rec, t, "raised" if direction > 0 else "cleared", new, cur, v, thr, spec,
                               {"warning": lv[0], "alarm": lv[1], "baseline": st.get("baseline"),
                                "confirm_n": self.confirm_n, "hysteresis": self.hysteresis,
                                "iso_zone": rec.get("iso_zone")}))
        return st, out

    @staticmethod
    def _event(key: str, rec: dict[str, Any], t: int, kind: str, level: int, previous: int, value: float,
               threshold: float | None, spec: LevelSpec, detail: dict[str, Any]) -> Record:
        eid = f"{key}:{t}:{kind}:{LEVELS[level]}"
        row = {"id": eid, "site": rec.get("site"), "gateway": rec.get("gateway"), "sensor": rec.get("sensor"),
               "asset": rec.get("asset") or key, "ts_ms": t, "kind": kind, "level": LEVELS[level],
               "previous": LEVELS[previous], "value": value, "threshold": threshold, "mode": spec.mode,
               "figure": FIGURE, "detail": json.dumps(detail, sort_keys=True)}
        return ("level_event", eid, row)
