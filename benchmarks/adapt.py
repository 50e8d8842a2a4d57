"""Few-shot site adaptation on rigs the fleet model never saw (issue 16's protocol).

For each of the four rigs: the fleet model (``models/faulttype.py``) is trained on the other
three plus 240 simulated bearings, exactly as in ``benchmarks/rig_out.py``. On the held-out
rig, k labelled recordings per class (k = 0, 1, 2; only classes the rig has; windows only from
those recordings) are drawn at random, ``--draws`` times per k (the same draws for every
method: paired comparisons), and each method of ``models/adapt.py`` adapts the fleet model
with them. Scored on that rig's *other* recordings (recording level: argmax of the mean window
probabilities; window level), and on the three fleet rigs (window level) against the fleet
model itself: the points the adaptation cost the machines the fleet already knew. The fleet
rigs are scored on the newest ``--fleet-holdout`` (0.3) of each recording, which neither the
fleet model nor the replay set contains (one window of gap; 0 scores in-sample, as the runs
before 2026-12-05 14:00 did).

Nothing is chosen on a held-out rig: every setting of the methods (site weight, network size,
steps, KE generations and split rate, RKD weights) is fixed in ``models/adapt.py``.

    .venv/bin/python benchmarks/adapt.py [--draws 5] [--methods finetune mlp ke rkd] [--json out.json]

``ke`` is scored twice from one training: its slim fit network (``ke``) and the last
generation's dense network (``ke-dense``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models import adapt as A
from edgevib.models.data import load_dir
from edgevib.models.faulttype import (
    CLASSES,
    FeatureSet,
    features_of,
    newest_held_out,
    simulated,
    train,
)
from edgevib.models.rigout import score

KS = (0, 1, 2)


def draw(site: FeatureSet, k: int, rng: np.random.Generator) -> np.ndarray:
    """Recording ids: k per class of ``site`` (at least one recording of each class stays for testing)."""
    chosen: list[int] = []
    for c in np.unique(site.y):
        recs = np.unique(site.rec[site.y == c])
        chosen += [int(r) for r in rng.choice(recs, min(k, len(recs) - 1), replace=False)]
    return np.asarray(chosen, np.int64)


def _models(method: str, fleet: A.Fleet, labelled: FeatureSet, seed: int, site_weight: float
            ) -> dict[str, A.Adapted]:
    if method == "ke":
        dense, splits = A.knowledge_evolution(fleet, labelled, seed=seed, site_weight=site_weight)
        return {"ke": A.extract_slim(dense, splits), "ke-dense": dense}
    return {method: A.adapt(method, fleet, labelled, seed=seed, site_weight=site_weight)}


def run(real: FeatureSet, sim: FeatureSet, methods: list[str], draws: int, log: Any = print, *,
        site_weight: float = A.SITE_WEIGHT, fleet_holdout: float = 0.3) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": "leave-one-rig-out few-shot adaptation", "ks": list(KS), "draws": draws,
                           "site_weight": site_weight, "fleet_holdout": fleet_holdout, "rigs": {}}
    for ri, rig in enumerate(str(r) for r in np.unique(real.rig)):
        t0 = time.time()
        held = real.rig == rig
        site, fleet_rigs = real.select(held), real.select(~held)
        if fleet_holdout:  # the fleet rigs' newest windows are neither replayed nor trained on
            newest, gap = newest_held_out(fleet_rigs, fleet_holdout)
            fleet_train, fleet_eval = fleet_rigs.select(~newest & ~gap), fleet_rigs.select(newest)
        else:  # in-sample: the fleet rigs' windows are the replay set the methods train on
            fleet_train = fleet_eval = fleet_rigs
        fleet_data = FeatureSet.concat([fleet_train, sim])
        fleet = A.Fleet(train(fleet_data), fleet_data)
        fleet_base = score(fleet.model.predict_proba(fleet_eval.x), fleet_eval)["window_acc"]
        rows: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for k in KS:
            for d in range(draws):
                chosen = draw(site, k, np.random.default_rng([ri, k, d]))
                lab = np.isin(site.rec, chosen)
                labelled, test = site.select(lab), site.select(~lab)
                runs = {"fleet": {"fleet": fleet.model}}
                for m in methods:
                    runs[m] = _models(m, fleet, labelled, d, site_weight)
                for models in runs.values():
                    for name, model in models.items():
                        s = score(model.predict_proba(test.x), test)
                        f = score(model.predict_proba(fleet_eval.x), fleet_eval)["window_acc"]
                        r = rows[f"{k}/{name}"]
                        r["recording_acc"].append(s["recording_acc"])
                        r["window_acc"].append(s["window_acc"])
                        r["fleet_loss_pt"].append(round(100 * (fleet_base - f), 2))
                        r["per_class_recordings"].append({c: v["recordings"] for c, v in s["per_class"].items()})
                        r["wrong"].append(s["wrong_recordings"])
                        r["n_labelled_windows"].append(int(lab.sum()))
        res: dict[str, Any] = {"fleet_window_acc_on_fleet_rigs": fleet_base, "seconds": round(time.time() - t0, 1),
                               "runs": {}}
        for key, r in rows.items():
            summ: dict[str, Any] = {}
            for metric in ("recording_acc", "window_acc", "fleet_loss_pt"):
                v = np.asarray(r[metric], float)
                summ[metric] = {"mean": round(float(v.mean()), 4), "sd": round(float(v.std()), 4),
                                "min": round(float(v.min()), 4), "max": round(float(v.max()), 4),
                                "values": [float(x) for x in v]}
            summ["per_class_recordings"] = {c: round(float(np.mean([p[c] for p in r["per_class_recordings"]])), 3)
                                            for c in r["per_class_recordings"][0]}
            summ["n_labelled_windows"] = r["n_labelled_windows"]
            summ["wrong"] = r["wrong"]
            res["runs"][key] = summ
        out["rigs"][rig] = res
        log(f"{rig}: {res['seconds']} s")
    return out


def table(res: dict[str, Any]) -> str:
    names = sorted({k.split("/", 1)[1] for r in res["rigs"].values() for k in r["runs"]},
                   key=lambda n: (n != "fleet", n))
    lines = [f"{'rig':<8} {'k':>2} {'method':<11} {'recordings (mean ± sd)':>23} {'windows':>15} "
             f"{'fleet loss pt':>15}  per class (recordings, mean)"]
    for rig, r in res["rigs"].items():
        for k in res["ks"]:
            for n in names:
                s = r["runs"].get(f"{k}/{n}")
                if s is None:
                    continue
                ra, wa, fl = s["recording_acc"], s["window_acc"], s["fleet_loss_pt"]
                pc = " ".join(f"{c} {v * 100:.0f}" for c, v in s["per_class_recordings"].items())
                lines.append(f"{rig:<8} {k:>2} {n:<11} {ra['mean'] * 100:>11.1f} ± {ra['sd'] * 100:>4.1f} % "
                             f"{wa['mean'] * 100:>6.1f} ± {wa['sd'] * 100:>4.1f} {fl['mean']:>7.2f} ± {fl['sd']:>4.2f}  {pc}")
    lines.append("")
    lines.append("mean over the four rigs (recordings %, windows %, fleet loss pt):")
    for k in res["ks"]:
        for n in names:
            vals = [r["runs"][f"{k}/{n}"] for r in res["rigs"].values() if f"{k}/{n}" in r["runs"]]
            if vals:
                lines.append(f"  k={k} {n:<11} {np.mean([v['recording_acc']['mean'] for v in vals]) * 100:6.1f} "
                             f"{np.mean([v['window_acc']['mean'] for v in vals]) * 100:6.1f} "
                             f"{np.mean([v['fleet_loss_pt']['mean'] for v in vals]):6.2f}")
    return "\n".join(lines)


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cwru", type=Path, default=Path("../shared/cwru"))
    ap.add_argument("--bearings", type=Path, default=Path("../shared/bearings"))
    ap.add_argument("--sim", type=int, default=240)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=["finetune", "mlp", "ke", "rkd"],
                    choices=["finetune", "finetune-sp", "mlp", "ke", "rkd"])
    ap.add_argument("--site-weight", type=float, default=A.SITE_WEIGHT,
                    help="weight of a site (class) cell relative to a fleet cell; for sensitivity runs only")
    ap.add_argument("--fleet-holdout", type=float, default=0.3,
                    help="newest share of each fleet-rig recording kept out of the fleet model and the replay "
                         "set, on which the fleet-rig loss is scored (0: in-sample, as the first runs)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    recs = load_dir(args.cwru) + load_dir(args.bearings)
    res = run(features_of(recs), features_of(simulated(args.sim)), args.methods, args.draws,
              site_weight=args.site_weight, fleet_holdout=args.fleet_holdout)
    res["classes"] = list(CLASSES)
    res["seconds"] = round(time.time() - t0, 1)
    print(table(res))
    print(f"\n{res['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
