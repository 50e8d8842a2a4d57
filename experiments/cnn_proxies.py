"""Scratch: train WDCNN recipes and score them on generalisation proxies (see docs/cnn.md).

usage: python experiments/cnn_proxies.py DATA_DIR RECIPE[,RECIPE...] [--device cuda] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.signal as ss
from edgevib.models import cnn
from edgevib.models.augment import AugmentConfig
from edgevib.models.data import load_dir
from edgevib.models.split import load_split, time_split, windows

# Recipes were run before the defaults changed; A is the first "full" augmentation.
A = AugmentConfig(speed=0.08, p_eq=0.8, eq_peak_db=12.0, p_noise=0.5, snr_db=(-6.0, 20.0))
RECIPES: dict[str, dict] = {
    "default": {},  # the shipped defaults of TrainOptions (== best_speed5)
    "clean": {"augment": AugmentConfig.none(), "envelope": 0},
    "noise": {"augment": AugmentConfig.none().replace(p_noise=0.5, snr_db=(-6.0, 20.0)), "envelope": 0},
    "full": {"augment": A},
    "nospeed": {"augment": A.replace(p_speed=0.0, speed=0.0)},
    "noeq": {"augment": A.replace(p_eq=0.0)},
    "speed5": {"augment": A.replace(speed=0.05)},
    "full_gap": {"augment": A, "pool_out": 1},
    "full_lp": {"augment": A.replace(p_lowpass=0.8, lowpass_hz=(2500.0, 5500.0))},
    "full_e60": {"augment": A, "epochs": 60},
    "full_env": {"augment": A, "envelope": 4},
    "full_env_e60": {"augment": A, "envelope": 4, "epochs": 60},
    "full_env8": {"augment": A, "envelope": 8},
    "full_n2": {"augment": A.replace(p_noise=0.7, snr_db=(-8.0, 15.0))},
    "full_env_n2": {"augment": A.replace(p_noise=0.7, snr_db=(-8.0, 15.0)), "envelope": 4},
    "full_peak": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0)},
    "full_env_peak_n2": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0, p_noise=0.7, snr_db=(-8.0, 15.0)),
                         "envelope": 4},
    "full_s100": {"augment": A, "steps_per_epoch": 100},
    "best": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0, p_noise=0.7, snr_db=(-8.0, 15.0)), "envelope": 4},
    "best_e40": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0, p_noise=0.7, snr_db=(-8.0, 15.0)),
                 "envelope": 4, "epochs": 40},
    "best_env8": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0, p_noise=0.7, snr_db=(-8.0, 15.0)),
                  "envelope": 8},
    "best_speed5": {"augment": A.replace(p_eq=0.9, eq_peak_db=18.0, p_noise=0.7, snr_db=(-8.0, 15.0),
                                         speed=0.05), "envelope": 4},
}


def chain(x: np.ndarray, kind: str, fs: float = 12000.0) -> np.ndarray:
    """Perturb a whole 12 kHz recording as another acquisition chain might."""
    if kind == "up48_kaiser":  # to 48 kHz and back with a softer anti-alias filter
        up = ss.resample_poly(x, 4, 1)
        return ss.resample_poly(up, 1, 4, window=("kaiser", 2.0))
    if kind == "lowpass4k":
        return ss.sosfiltfilt(ss.butter(4, 4000, fs=fs, output="sos"), x)
    if kind == "resonance3k":
        b, a = ss.iirpeak(3000, 4, fs=fs)
        return x + 3 * ss.lfilter(b, a, x)
    if kind == "resonance5k":
        b, a = ss.iirpeak(5000, 6, fs=fs)
        return x + 3 * ss.lfilter(b, a, x)
    if kind.startswith("speed"):
        pct = int(kind[5:])  # speed+3 -> play 3% faster
        return ss.resample_poly(x, 100, 100 + pct)
    if kind == "tilt":
        return x + 0.5 * np.gradient(x)
    raise ValueError(kind)


CHAINS = ("up48_kaiser", "lowpass4k", "resonance3k", "resonance5k", "speed+4", "speed-4", "tilt")


def score(model, ws):
    p = model.predict_proba(ws.x3d())
    pred = p.argmax(1)
    acc = float((pred == ws.y).mean())
    votes = [int(np.bincount(pred[ws.recording == r], minlength=len(ws.classes)).argmax() == ws.y[ws.recording == r][0])
             for r in np.unique(ws.recording)]
    wrong = [f"{ws.sources[r]}->{ws.classes[np.bincount(pred[ws.recording == r]).argmax()]}"
             for r in np.unique(ws.recording)
             if np.bincount(pred[ws.recording == r], minlength=len(ws.classes)).argmax() != ws.y[ws.recording == r][0]]
    return {"acc": round(acc, 4), "rec_vote": f"{sum(votes)}/{len(votes)}", "wrong": wrong}


def noisy(ws, snr_db, seed=0):
    rng = np.random.default_rng(seed)
    p = (ws.x ** 2).mean(1, keepdims=True)
    x = ws.x + rng.standard_normal(ws.x.shape).astype(np.float32) * np.sqrt(p / 10 ** (snr_db / 10))
    return type(ws)(x.astype(np.float32), ws.y, ws.classes, ws.recording, ws.start, ws.sources, ws.fs, ws.rpm)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("recipes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocols", default="time,load3,lolo,chain")
    a = ap.parse_args()
    recs = load_dir(a.data, fs=12000.0)
    prots = a.protocols.split(",")
    out = {}
    for name in a.recipes.split(","):
        name, _, seed = name.partition("@")  # "best@2": recipe best, seed 2
        a.seed = int(seed or a.seed)
        # Recipes other than "default" predate the envelope branch being on by default.
        opts = dict({} if name == "default" else {"envelope": 0}, **RECIPES[name], device=a.device)
        if a.epochs:
            opts["epochs"] = a.epochs
        res: dict = {}
        t0 = time.time()
        if "time" in prots:
            tr, te = time_split(recs)
            m = cnn.train(tr, seed=a.seed, **opts)
            res["time"] = score(m, te)
            res["time_snr0"] = score(m, noisy(te, 0))["acc"]
            res["time_snr-4"] = score(m, noisy(te, -4))["acc"]
        loads = (0, 1, 2, 3) if "lolo" in prots else tuple(int(p[4:]) for p in prots if p.startswith("load"))
        for ld in loads:
            tr, te = load_split(recs, test_loads=(ld,))
            m = cnn.train(tr, seed=a.seed, **opts)
            res[f"load{ld}"] = score(m, te)
            pred = m.predict_proba(te.x3d()).argmax(1)
            res[f"load{ld}_confusion"] = {c: np.bincount(pred[te.y == i], minlength=len(te.classes)).tolist()
                                          for i, c in enumerate(te.classes)}
            if "chain" in prots and ld == 3:
                held = [r for r in recs if r.load_hp == ld]
                for c in CHAINS:
                    pert = [type(r)(chain(r.signal.astype(np.float64), c).astype(np.float32), r.fs, r.rpm, r.label,
                                    r.size_in, r.or_position, r.load_hp, r.source) for r in held]
                    res[f"load3_{c}"] = score(m, windows(pert))
        res["seconds"] = round(time.time() - t0, 1)
        out[f"{name}@{a.seed}"] = res
        print(json.dumps({f"{name}@{a.seed}": res}), flush=True)


if __name__ == "__main__":
    main()
