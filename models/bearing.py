"""Rolling-bearing geometry and its characteristic fault frequencies.

Orders are multiples of shaft speed. ``bsf`` is the ball *spin* frequency
(the textbook formula); a ball defect hits a race twice per spin, so the data
center's "rolling element" figure is ``rolling_element == 2 * bsf``.

>>> o = CWRU_DE_6205.orders()
>>> round(o.bpfi, 4), round(o.bpfo, 4), round(o.ftf, 4), round(o.rolling_element, 3)
(5.4152, 3.5848, 0.3983, 4.713)

The data center's own table rounds slightly differently (FTF 0.39828, rolling
element 4.7135): these agree to better than 1e-4 relative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgevib.models.errors import ModelsError


@dataclass(frozen=True)
class FaultOrders:
    """Fault frequencies in orders of shaft speed (or in Hz, from :meth:`BearingGeometry.frequencies`)."""

    bpfo: float  # ball pass, outer race
    bpfi: float  # ball pass, inner race
    bsf: float  # ball spin (one revolution of a ball about its own axis)
    ftf: float  # fundamental train (cage)

    @property
    def rolling_element(self) -> float:
        """Twice ball spin: the rate a ball defect strikes the races (CWRU's "rolling element")."""
        return 2.0 * self.bsf

    def scaled(self, factor: float) -> FaultOrders:
        return FaultOrders(self.bpfo * factor, self.bpfi * factor, self.bsf * factor, self.ftf * factor)


@dataclass(frozen=True)
class BearingGeometry:
    """Deep-groove or angular-contact bearing; diameters in any one unit."""

    n_balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.n_balls < 3:
            raise ModelsError("models.bearing", f"n_balls={self.n_balls}", "a bearing has at least 3 balls")
        if not 0 < self.ball_diameter < self.pitch_diameter:
            raise ModelsError("models.bearing",
                              f"ball_diameter={self.ball_diameter}, pitch_diameter={self.pitch_diameter}",
                              "need 0 < ball diameter < pitch diameter")
        if not 0 <= self.contact_angle_deg < 90:
            raise ModelsError("models.bearing", f"contact_angle_deg={self.contact_angle_deg}", "use 0 <= angle < 90")

    def orders(self) -> FaultOrders:
        n, r = self.n_balls, self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle_deg))
        return FaultOrders(
            bpfo=n / 2 * (1 - r),
            bpfi=n / 2 * (1 + r),
            bsf=self.pitch_diameter / (2 * self.ball_diameter) * (1 - r * r),
            ftf=0.5 * (1 - r),
        )

    def frequencies(self, rpm: float) -> FaultOrders:
        """Fault frequencies in Hz at shaft speed ``rpm``."""
        if not rpm > 0:
            raise ModelsError("models.bearing", f"rpm={rpm}", "pass the shaft speed in revolutions per minute (> 0)")
        return self.orders().scaled(rpm / 60.0)


# CWRU drive end, SKF 6205-2RS JEM (inches).
CWRU_DE_6205 = BearingGeometry(9, 0.3126, 1.537, 0.0, "SKF 6205-2RS (CWRU drive end)")
# CWRU fan end, SKF 6203-2RS JEM (inches).
CWRU_FE_6203 = BearingGeometry(8, 0.2656, 1.122, 0.0, "SKF 6203-2RS (CWRU fan end)")
# A larger 6308-class deep-groove bearing (mm), for tests on a bearing the models never saw.
DG_6308 = BearingGeometry(8, 15.0, 65.0, 0.0, "6308-class deep groove")
# A 7206-class angular-contact bearing (mm, 15 degrees).
AC_7206 = BearingGeometry(13, 9.525, 46.0, 15.0, "7206-class angular contact")

GEOMETRIES: dict[str, BearingGeometry] = {
    "cwru-de-6205": CWRU_DE_6205, "cwru-fe-6203": CWRU_FE_6203, "6308": DG_6308, "7206": AC_7206,
}
