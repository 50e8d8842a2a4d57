"""Cost of the condition indicators per sensor (edge/indicators.py). Prints a report.

What the agent pays once per ``indicators.interval_s`` per sensor: the indicators of the
last 2 s at 12 kHz (velocity by FFT, window statistics, order-domain envelope lines), the
message built and serialised. Median and p95 over ``--repeat`` runs on simulated signals,
and the share of one core at the default 10 s interval.

    .venv/bin/python benchmarks/indicators_cost.py --repeat 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from edgevib.edge.indicators import compute, velocity_rms_mm_s
from edgevib.models.bearing import CWRU_DE_6205
from edgevib.models.orders import fault_frequencies
from edgevib.models.simulate import simulate

from edgevib import protocol as proto

FS = 12000.0


def _time(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--seconds", type=float, default=2.0, help="stretch length (the agent uses 2 s)")
    p.add_argument("--interval", type=float, default=10.0, help="indicators.interval_s")
    args = p.parse_args()
    fh = fault_frequencies(CWRU_DE_6205, 1797.0)
    n = int(args.seconds * FS)
    x = simulate("OR", duration_s=args.seconds + 0.1, rpm=1797.0, seed=1)[:n].astype(np.float32)

    def full() -> bytes:
        ind = compute(x, FS, fh)
        return proto.dumps(proto.make_indicators(
            site="s", gateway="g", sensor="de", t_ns=0, sample_rate=FS, iso_group=2, iso_foundation="rigid",
            rpm=1797.0, rpm_source="configured", **ind.fields()))

    full()  # warm-up (FFT plans, imports)
    rows = [("velocity RMS only", _time(lambda: velocity_rms_mm_s(x, FS), args.repeat)),
            ("all indicators + message", _time(full, args.repeat))]
    print(f"indicators cost per sensor ({args.seconds:g} s at {FS:g} Hz, {args.repeat} runs)")
    print(f"{'what':28s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, ms in rows:
        q = statistics.quantiles(ms, n=20)
        print(f"{name:28s} {statistics.median(ms):8.2f} {q[18]:8.2f}")
    p50 = statistics.median(rows[1][1])
    print(f"share of one core per sensor at interval {args.interval:g} s: {100 * p50 / 1000 / args.interval:.3f} %")
    print(f"message size: {len(full())} bytes")


if __name__ == "__main__":
    main()
