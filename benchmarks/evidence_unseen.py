"""Physics check (edgevib.edge.evidence) on bearings no model was trained on.

Prints fault-type accuracy per fault type and per source:

* simulated bearings of other geometries (6203, 6308-class, 7206-class angular contact),
  speeds 900-2400 rpm and resonances 2-4.8 kHz, at three fault severities, 1 s segments;
* the real CWRU drive-end recordings (12 kHz fault files; 48 kHz normals resampled with
  resample_poly(x, 1, 4)), non-overlapping 1 s segments, the file's own rpm.

Nothing here is fitted: the detection threshold was set from simulated healthy bearings.

    .venv/bin/python benchmarks/evidence_unseen.py --data ../shared/cwru [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from edgevib.edge.evidence import EvidenceConfig, analyze
from edgevib.models.bearing import AC_7206, CWRU_DE_6205, CWRU_FE_6203, DG_6308
from edgevib.models.simulate import simulate
from scipy.signal import resample_poly

TYPES = ("normal", "B", "IR", "OR")
RPM_BY_LOAD = {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}  # where the file lacks its rpm
Confusion = dict[str, Counter[str]]


def run_sim(fs: float = 12000.0) -> dict[str, Confusion]:
    out: dict[str, Confusion] = defaultdict(lambda: defaultdict(Counter))
    seed = 0
    for geom, rpm, res, sev in itertools.product([CWRU_FE_6203, DG_6308, AC_7206], [900.0, 1500.0, 2400.0],
                                                 [2000.0, 3500.0, 4800.0], [0.1, 0.3, 1.0]):
        for fault in TYPES:
            seed += 1
            x = simulate(fault, fs=fs, duration_s=1.0, rpm=rpm, geometry=geom, severity=sev,
                         resonance_hz=res, noise_g=0.1, seed=seed)
            got = analyze(x, fs, EvidenceConfig(geometry=geom, rpm=rpm)).fault_type
            out[f"sim severity {sev:g}"][fault][got] += 1
            out["sim all"][fault][got] += 1
    return out


def run_cwru(data: Path, max_segments: int) -> dict[str, Confusion]:
    out: dict[str, Confusion] = defaultdict(lambda: defaultdict(Counter))
    for row in csv.DictReader(open(data / "manifest.csv")):
        d = np.load(data / row["file"])
        x, fs = d["signal"].astype(np.float64), float(d["fs"])
        if fs == 48000.0:
            x, fs = resample_poly(x, 1, 4), 12000.0
        rpm = float(row["rpm"]) if row["rpm"] not in ("", "nan") else RPM_BY_LOAD[int(row["load_hp"])]
        lab, size, pos = row["label"], row["size_in"], row["or_position"]
        standard = lab == "normal" or (size in ("0.007", "0.014", "0.021") and (lab != "OR" or pos == "@6"))
        n = int(fs)
        for s in range(0, min(len(x) - n, max_segments * n) + 1, n):
            got = analyze(x[s : s + n], fs, EvidenceConfig(geometry=CWRU_DE_6205, rpm=rpm)).fault_type
            out["cwru all"][lab][got] += 1
            out["cwru standard 10-class" if standard else "cwru other (OR@3/@12, 028)"][lab][got] += 1
    return out


def table(results: dict[str, Confusion]) -> list[dict[str, object]]:
    rows = []
    print(f"{'source':<30} {'type':<7} {'n':>5} {'acc':>6}   predicted (normal/B/IR/OR)")
    for source in sorted(results, key=lambda s: (s.split()[0], s.endswith(" all"), s)):
        conf = results[source]
        tot = right = 0
        for t in TYPES:
            c = conf.get(t)
            if not c:
                continue
            n = sum(c.values())
            tot, right = tot + n, right + c[t]
            pred = "/".join(str(c[p]) for p in TYPES)
            print(f"{source:<30} {t:<7} {n:>5} {c[t] / n:>6.1%}   {pred}")
            rows.append({"source": source, "type": t, "n": n, "accuracy": c[t] / n, "predicted": dict(c)})
        bal = np.mean([conf[t][t] / sum(conf[t].values()) for t in TYPES if conf.get(t)])
        print(f"{source:<30} {'ALL':<7} {tot:>5} {right / tot:>6.1%}   balanced {bal:.1%}")
        rows.append({"source": source, "type": "ALL", "n": tot, "accuracy": right / tot, "balanced": float(bal)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "cwru")
    ap.add_argument("--segments", type=int, default=10, help="1 s segments per CWRU file (max)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = {**run_sim(), **run_cwru(args.data, args.segments)}
    rows = table(results)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
