"""Leave-one-rig-out report: fault type on rigs the model never saw (issue 13's protocol).

For each of the four rigs (CWRU, HIT-SM SpectraQuest, HIT-SM self-built, MFPT): the
fault-type model is trained on the other three plus 240 simulated bearings and tested on
it, window level (0.68 s windows, hop 0.34 s) and recording level (mean probabilities).
Beside it, on the same windows:

* the envelope physics check alone (edge/evidence.py: no training, its threshold set on
  simulated healthy bearings), on 1 s segments;
* the shipped 10-class CWRU CNN ``cnn_small`` (probabilities summed by fault type), which
  was trained on CWRU: its CWRU row is *not* held out, the other rows are;
* a level-only baseline (logistic regression on log RMS), which shows that gain alone does
  not carry the result (units and gains differ between rigs and files).

Nothing is chosen on a held-out rig (docs/transfer.md says what was chosen on what).

    .venv/bin/python benchmarks/rig_out.py --cwru ../shared/cwru --bearings ../shared/bearings [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.edge.evidence import EvidenceConfig, analyze
from edgevib.edge.runtime import OnnxModel
from edgevib.models.classes import fault_type
from edgevib.models.data import MODEL_FS, load_dir, resample
from edgevib.models.faulttype import features_of, simulated
from edgevib.models.faulttype_cli import report_text
from edgevib.models.rigout import rig_out

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"


def physics_and_cnn(recs: list[Any]) -> dict[str, dict[str, float]]:
    """Recording-level fault-type accuracy per rig of the physics check and of cnn_small."""
    cnn = OnnxModel(ZOO / "cnn_small.onnx")
    w = cnn.meta.window
    hits: dict[str, Counter[str]] = defaultdict(Counter)
    for r in recs:
        x = resample(r, MODEL_FS).signal
        truth = fault_type(r.class_name)
        votes: Counter[str] = Counter()
        for i in range(0, len(x) - 12000 + 1, 12000):
            votes[analyze(x[i:i + 12000], MODEL_FS, EvidenceConfig(geometry=r.geometry, rpm=r.rpm)).fault_type] += 1
        hits[r.rig]["physics"] += int(votes.most_common(1)[0][0] == truth)
        wins = np.lib.stride_tricks.sliding_window_view(x, w)[:: w // 2][:, None, :]
        p = cnn.predict(np.ascontiguousarray(wins)).mean(axis=0)
        by_type: dict[str, float] = defaultdict(float)
        for c, v in zip(cnn.meta.classes, p, strict=True):
            by_type[fault_type(c)] += float(v)
        hits[r.rig]["cnn_small"] += int(max(by_type, key=lambda k: by_type[k]) == truth)
        hits[r.rig]["n"] += 1
    return {rig: {k: round(c[k] / c["n"], 4) for k in ("physics", "cnn_small")} for rig, c in hits.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cwru", type=Path, default=Path("../shared/cwru"))
    ap.add_argument("--bearings", type=Path, default=Path("../shared/bearings"))
    ap.add_argument("--sim", type=int, default=240)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.time()
    recs = load_dir(args.cwru) + load_dir(args.bearings)
    res = rig_out(features_of(recs), features_of(simulated(args.sim)) if args.sim else None)
    res["baselines_recording_acc"] = physics_and_cnn(recs)
    res["seconds"] = round(time.time() - t0, 1)
    print(report_text(res))
    print("\nrecording-level fault type of the baselines on the same recordings:")
    print(f"{'rig':<10} {'fault-type model':>17} {'physics alone':>14} {'cnn_small (10-class CWRU)':>26}")
    for rig, v in res["rigs"].items():
        b = res["baselines_recording_acc"][rig]
        seen = " (seen)" if rig == "cwru" else ""
        print(f"{rig:<10} {v['recording_acc'] * 100:>16.1f}% {b['physics'] * 100:>13.1f}% "
              f"{b['cnn_small'] * 100:>18.1f}%{seen}")
    print("\nwrong recordings (held-out rig):")
    for rig, v in res["rigs"].items():
        print(f"  {rig}: {', '.join(v['wrong_recordings']) or 'none'}")
    print(f"({res['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
