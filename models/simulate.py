"""Physics-based bearing vibration simulator, for demos and tests without data.

The signal is shaft imbalance (1x, 2x), plus for a faulty bearing a train of impacts
at the fault's characteristic frequency (BPFO, BPFI, or 2x ball spin for a ball, which
strikes both races), each ringing at a structural resonance as a decaying sinusoid,
plus white noise. Inner-race impacts are amplitude-modulated at shaft speed (the
defect rotates through the load zone), ball impacts at the cage frequency (FTF).
Impact timing jitters by ``jitter`` (a fraction of the period) to model slip.

:class:`Simulator` streams chunk by chunk with continuity: any chunking of
``next_samples`` yields the same samples as one call of the same total length.

>>> x = simulate("IR", duration_s=1.0, rpm=1797, seed=1)
>>> x.dtype, x.shape
(dtype('float32'), (12000,))
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from edgevib.models.bearing import CWRU_DE_6205, BearingGeometry
from edgevib.models.errors import ModelsError

Fault = Literal["normal", "B", "IR", "OR"]
_COMP = "models.simulate"


class Simulator:
    """An endless, seeded vibration stream of one bearing; ``rpm`` may be changed between chunks."""

    def __init__(self, fault: str = "normal", *, fs: float = 12000.0, rpm: float = 1797.0,
                 geometry: BearingGeometry = CWRU_DE_6205, severity: float = 1.0, onset_s: float = 0.0,
                 growth_per_s: float = 0.0, resonance_hz: float = 3000.0, damping: float = 0.06,
                 noise_g: float = 0.05, shaft_g: float = 0.05, jitter: float = 0.015, seed: int = 0) -> None:
        if fault not in ("normal", "B", "IR", "OR"):
            raise ModelsError(_COMP, f"fault={fault!r}", "use 'normal', 'B', 'IR' or 'OR'")
        if not fs > 0 or not rpm > 0:
            raise ModelsError(_COMP, f"fs={fs}, rpm={rpm}", "use a positive sample rate and shaft speed")
        if not 0 < resonance_hz < fs / 2:
            raise ModelsError(_COMP, f"resonance_hz={resonance_hz} at fs={fs}", "keep the resonance below fs/2")
        if not 0 < damping < 1 or severity < 0 or noise_g < 0 or not 0 <= jitter < 0.5:
            raise ModelsError(_COMP, f"damping={damping}, severity={severity}, noise_g={noise_g}, jitter={jitter}",
                              "use 0<damping<1, severity>=0, noise_g>=0, 0<=jitter<0.5")
        self.fault, self.fs, self.rpm, self.geometry = fault, float(fs), float(rpm), geometry
        self.severity, self.onset_s, self.growth_per_s = severity, onset_s, growth_per_s
        self.noise_g, self.shaft_g, self.jitter = noise_g, shaft_g, jitter
        wn = 2 * math.pi * resonance_hz
        self._decay = damping * wn  # 1/s
        self._wd = wn * math.sqrt(1 - damping**2)
        self._ring = int(math.ceil(math.log(1e4) / self._decay * self.fs))  # samples until -80 dB
        noise_seq, impact_seq, phase_seq = np.random.SeedSequence(seed).spawn(3)
        self._noise_rng = np.random.default_rng(noise_seq)
        self._impact_rng = np.random.default_rng(impact_seq)
        self._phases = np.random.default_rng(phase_seq).uniform(0, 2 * math.pi, 3)
        self._n = 0  # samples emitted so far
        self._shaft_angle = 0.0  # revolutions, integrated so rpm changes stay continuous
        self._next_impact = 0.0  # seconds
        self._pending: list[tuple[float, float]] = []  # (time s, amplitude g) still ringing

    @property
    def time_s(self) -> float:
        return self._n / self.fs

    def fault_hz(self) -> float:
        """Impact rate of the fault at the current speed (0 for normal)."""
        f = self.geometry.frequencies(self.rpm)
        return {"normal": 0.0, "OR": f.bpfo, "IR": f.bpfi, "B": f.rolling_element}[self.fault]

    def _amplitude(self, t: float, rev: float) -> float:
        if t < self.onset_s:
            return 0.0
        a = self.severity * (1 + self.growth_per_s * (t - self.onset_s))
        if self.fault == "IR":  # defect on the rotating race passes through the load zone once per rev
            a *= 1 + 0.8 * math.cos(2 * math.pi * rev + self._phases[2])
        elif self.fault == "B":  # the ball travels with the cage
            a *= 1 + 0.6 * math.cos(2 * math.pi * rev * self.geometry.orders().ftf + self._phases[2])
        return a * float(1 + 0.1 * self._impact_rng.standard_normal())

    def next_samples(self, n: int) -> np.ndarray:
        """The next ``n`` samples (float32, g)."""
        if n < 0:
            raise ModelsError(_COMP, f"n={n}", "ask for a non-negative number of samples")
        fr = self.rpm / 60.0
        t0, t_end = self._n / self.fs, (self._n + n) / self.fs
        tau = np.arange(n) / self.fs
        rev = self._shaft_angle + fr * tau
        x = self.shaft_g * np.sin(2 * np.pi * rev + self._phases[0])
        x += 0.4 * self.shaft_g * np.sin(4 * np.pi * rev + self._phases[1])
        x += self.noise_g * self._noise_rng.standard_normal(n)
        rate = self.fault_hz()
        if rate > 0:
            while self._next_impact < t_end:
                ti = self._next_impact
                amp = self._amplitude(ti, self._shaft_angle + fr * (ti - t0))
                if amp > 0:
                    self._pending.append((ti, amp))
                step = 1 + self.jitter * float(self._impact_rng.standard_normal())
                self._next_impact = ti + max(0.2, step) / rate
        # absolute sample indices keep every impact identical however the stream is chunked
        end = self._n + n
        for ti, amp in self._pending:
            first = int(math.ceil(ti * self.fs))
            i0, i1 = max(first, self._n), min(end, first + self._ring + 1)
            if i1 > i0:
                d = np.arange(i0, i1) / self.fs - ti
                x[i0 - self._n:i1 - self._n] += amp * np.exp(-self._decay * d) * np.sin(self._wd * d)
        self._pending = [(ti, a) for ti, a in self._pending if math.ceil(ti * self.fs) + self._ring + 1 > end]
        self._shaft_angle = (self._shaft_angle + fr * n / self.fs) % 1e6
        self._n += n
        return x.astype(np.float32)


def simulate(fault: str = "normal", *, fs: float = 12000.0, duration_s: float = 1.0, rpm: float = 1797.0,
             geometry: BearingGeometry = CWRU_DE_6205, severity: float = 1.0, onset_s: float = 0.0,
             growth_per_s: float = 0.0, resonance_hz: float = 3000.0, damping: float = 0.06,
             noise_g: float = 0.05, jitter: float = 0.015, seed: int = 0) -> np.ndarray:
    """``duration_s`` of one bearing's vibration, float32 in g (see :class:`Simulator`)."""
    sim = Simulator(fault, fs=fs, rpm=rpm, geometry=geometry, severity=severity, onset_s=onset_s,
                    growth_per_s=growth_per_s, resonance_hz=resonance_hz, damping=damping, noise_g=noise_g,
                    jitter=jitter, seed=seed)
    return sim.next_samples(int(round(duration_s * fs)))
