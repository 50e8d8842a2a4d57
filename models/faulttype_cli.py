"""``edgevib models eval --protocol rig-out`` and ``edgevib models faulttype``.

Both read any number of data folders through :func:`edgevib.models.data.load_dir` (CWRU,
and ``../shared/bearings`` with one folder per rig); each recording brings its own rig name,
bearing geometry and speed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.contract import ModelMeta, save
from edgevib.models.data import MODEL_FS, Recording, load_dir
from edgevib.models.faulttype import (
    AGENT_HOP,
    CLASSES,
    KIND,
    WINDOW,
    FeatureSet,
    features_of,
    simulated,
    train,
)
from edgevib.models.rigout import rig_out

from edgevib import __version__

log = logging.getLogger(__name__)
SIM_RECORDINGS = 240


def _recordings(dirs: list[Path]) -> list[Recording]:
    recs: list[Recording] = []
    for d in dirs:
        recs += load_dir(d)
    return recs


def _sim(n: int, seed: int) -> FeatureSet | None:
    return features_of(simulated(n, seed)) if n > 0 else None


def report_text(r: dict[str, Any]) -> str:
    """A plain-text table of a :func:`rig_out` result."""
    lines = [f"protocol: {r['protocol']} (train on the other rigs + simulated bearings; "
             "nothing chosen on the held-out rig)",
             f"{'held out':<10} {'windows':>8} {'recordings':>11} {'ECE':>6} {'healthy FP rec':>15}  per class (recordings)"]
    for rig, v in r["rigs"].items():
        pc = "  ".join(f"{c} {x['recordings'] * 100:.0f}%/{x['n_recordings']}" for c, x in v["per_class"].items())
        lines.append(f"{rig:<10} {v['window_acc'] * 100:>7.1f}% {v['recording_acc'] * 100:>10.1f}% {v['ece']:>6.3f} "
                     f"{v['healthy_false_fault_recordings']:>15}  {pc}")
    m = r["mean"]
    lines.append(f"{'mean':<10} {m['window_acc'] * 100:>7.1f}% {m['recording_acc'] * 100:>10.1f}% {m['ece']:>6.3f}")
    lines.append(f"level-only baseline (log RMS, windows): mean {r['rms_baseline']['mean'] * 100:.1f}%")
    return "\n".join(lines)


def cmd_rig_out(args: argparse.Namespace) -> int:
    recs = _recordings(args.data)
    real = features_of(recs)
    if len(np.unique(real.rig)) < 2:
        from edgevib.errors import ConfigError

        raise ConfigError("models.eval", f"one rig in {[str(d) for d in args.data]}",
                          "pass --data for at least two rigs, e.g. --data ../shared/cwru --data ../shared/bearings")
    res = rig_out(real, _sim(args.sim, args.seed), progress=None if args.json else print)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2) if args.json else report_text(res))
    return 0


def build(dirs: list[Path], out: Path, *, sim: int = SIM_RECORDINGS, seed: int = 0) -> ModelMeta:
    """Train on every rig in ``dirs`` (+ simulation) and write the two-input ONNX model."""
    recs = _recordings(dirs)
    data = features_of(recs)
    s = _sim(sim, seed)
    model = train(data if s is None else FeatureSet.concat([data, s]))
    rigs = sorted(str(r) for r in np.unique(data.rig))
    meta = ModelMeta(CLASSES, MODEL_FS, WINDOW, AGENT_HOP, model.arch, __version__,
                     f"rigs {', '.join(rigs)}: {len(recs)} recordings, {len(data.y)} windows; "
                     f"{sim} simulated bearings (seed {seed})",
                     {"temperature": round(model.temperature, 3)}, KIND)
    return save(model.to_onnx(), meta, out)


def cmd_faulttype(args: argparse.Namespace) -> int:
    meta = build(args.data, args.out, sim=args.sim, seed=args.seed)
    print(f"wrote {args.out}: classes {list(meta.classes)}, window {meta.window}, inputs x + orders "
          f"({meta.aux_input}); {meta.trained_on}")
    return 0


def add_parsers(sub: Any) -> None:
    f = sub.add_parser("faulttype", help="train the fault-type model (normal/B/IR/OR) on order features")
    f.add_argument("--data", type=Path, action="append", required=True, help="data folder, repeatable")
    f.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    f.add_argument("--sim", type=int, default=SIM_RECORDINGS, help="simulated bearings added to training (0 = none)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_faulttype)


__all__ = ["add_parsers", "build", "cmd_rig_out", "report_text"]
