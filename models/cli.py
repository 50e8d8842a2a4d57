"""``edgevib models train|eval|build-zoo``: train on CWRU, evaluate honestly, ship the zoo.

Trainer modules (``edgevib.models.cnn``, ``edgevib.models.nsae_lcn``) are imported only
when a command runs, so ``edgevib`` works without the ``train`` extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from edgevib.models import arch as archs
from edgevib.models.card import write_card
from edgevib.models.classes import parse_classes
from edgevib.models.contract import ModelMeta, read_meta, save
from edgevib.models.data import MODEL_FS, load_dir
from edgevib.models.evaluate import confusion_table, evaluate, write_report
from edgevib.models.split import WindowSet, load_split, time_split

from edgevib import __version__
from edgevib.errors import ConfigError
from edgevib.progress import Bar, null_progress

log = logging.getLogger(__name__)
ZOO_SNRS = (0.0, -4.0)


def load_trainer(arch: str) -> ModuleType:
    """The trainer module registered as ``arch`` (:mod:`edgevib.models.arch`); a missing extra raises."""
    return archs.get(arch).load()


def _value(v: str) -> Any:
    if "," in v:
        return tuple(_value(s) for s in v.split(",") if s)
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def parse_opts(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=5", "lr=1e-3"]`` -> ``{"epochs": 5, "lr": 0.001}``."""
    out: dict[str, Any] = {}
    for it in items or []:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise ConfigError("models.cli", f"--opt {it!r}", "write --opt KEY=VALUE, e.g. --opt epochs=5")
        out[key.strip()] = _value(val.strip())
    return out


def _split(args: argparse.Namespace, classes: tuple[str, ...], window: int, hop: int,
           fs: float = MODEL_FS) -> tuple[WindowSet, WindowSet, str, int]:
    recs = load_dir(args.data, classes)
    if args.split == "time":
        tr, te = time_split(recs, window, hop, args.test_frac, classes, fs=fs)
        desc = f"time split (per recording: first {1 - args.test_frac:.0%} train, last {args.test_frac:.0%} test)"
    else:
        tr, te = load_split(recs, window, hop, tuple(args.test_loads), classes, fs=fs)
        desc = f"load split (load {','.join(map(str, args.test_loads))} held out)"
    return tr, te, desc, len(recs)


def _train(mod: ModuleType, arch: str, ws: WindowSet, seed: int, opts: dict[str, Any], quiet: bool) -> tuple[Any, float]:
    t0 = time.monotonic()
    model = mod.train(ws, seed=seed, progress=null_progress if quiet else Bar(f"train {arch}"), **opts)
    return model, time.monotonic() - t0


def _summary(res: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat numbers for the ONNX metadata."""
    c = res["clean"]
    out = {f"{prefix}accuracy": round(c["accuracy"], 4), f"{prefix}macro_f1": round(c["macro_f1"], 4),
           f"{prefix}recordings": f"{c['recordings']['correct']}/{c['recordings']['total']}",
           f"{prefix}test_windows": res["n_windows"]}
    out.update({f"{prefix}snr{k}_accuracy": round(v["accuracy"], 4) for k, v in res["snr"].items()})
    return out


def _print_result(res: dict[str, Any], title: str) -> None:
    c = res["clean"]
    r = c["recordings"]
    print(f"{title}: {res['n_windows']} test windows from {res['n_recordings']} recordings")
    print(f"accuracy {c['accuracy']:.4f}  macro-F1 {c['macro_f1']:.4f}  recordings read right "
          f"{r['correct']}/{r['total']}")
    for k, v in res["snr"].items():
        print(f"SNR {k:>4} dB: accuracy {v['accuracy']:.4f}  macro-F1 {v['macro_f1']:.4f}")
    print(confusion_table(c["confusion"], res["classes"]))


def cmd_train(args: argparse.Namespace) -> int:
    mod = load_trainer(args.arch)
    classes = parse_classes(args.classes)
    tr, te, desc, n_recs = _split(args, classes, args.window, args.hop)
    opts = parse_opts(args.opt)
    if args.epochs is not None:
        opts["epochs"] = args.epochs
    model, secs = _train(mod, args.arch, tr, args.seed, opts, getattr(args, "quiet", False))
    trained_on = f"{Path(args.data).name}: {n_recs} recordings, {desc}, {len(tr)} train windows, seed {args.seed}"
    meta = ModelMeta(classes, tr.fs, tr.window, args.hop, model.arch, __version__, trained_on)
    proto = model.to_onnx()
    save(proto, meta, args.out)
    res = evaluate(args.out, te, snrs=args.snr, seed=args.seed, progress=null_progress if getattr(args, "quiet", False) else Bar("eval"))
    save(proto, dataclasses.replace(meta, metrics={"split": args.split, "train_seconds": round(secs, 1),
                                                   **_summary(res)}), args.out)
    _print_result(res, f"{args.out} ({model.arch}, trained {secs:.0f} s, {desc})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "rig-out":  # trains its own models, one per held-out rig
        from edgevib.models.faulttype_cli import cmd_rig_out

        return cmd_rig_out(args)
    if len(args.data) != 1 or args.model is None:
        raise ConfigError("models.eval", f"--model {args.model}, {len(args.data)} --data folders",
                          "the split protocols evaluate one --model on one --data folder")
    args.data = args.data[0]
    meta = read_meta(args.model)
    _, te, desc, _ = _split(args, meta.classes, meta.window, meta.hop, meta.sample_rate)
    res = evaluate(args.model, te, snrs=args.snr, seed=args.seed,
                   progress=null_progress if args.json or getattr(args, "quiet", False) else Bar("eval"))
    res["split"] = desc
    js, png = write_report(res, args.out_dir, Path(args.model).stem)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_result(res, f"{args.model} ({meta.arch}) on {desc}")
        print(f"wrote {js} and {png}")
    return 0


def build_one(arch: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train ``arch`` on the time split and on loads 0-2; write ``<name>.onnx/.json/.md/_confusion.png``."""
    mod, name, opts = load_trainer(arch), archs.get(arch).zoo_name, parse_opts(args.opt)
    classes = parse_classes(args.classes)
    recs = load_dir(args.data, classes)
    tr, te = time_split(recs, args.window, args.hop, 0.3, classes)
    model, secs = _train(mod, arch, tr, args.seed, opts, getattr(args, "quiet", False))
    meta = ModelMeta(classes, tr.fs, tr.window, args.hop, model.arch, __version__,
                     f"{Path(args.data).name}: {len(recs)} recordings, time split 70/30, "
                     f"{len(tr)} train windows, seed {args.seed}")
    path, proto = out / f"{name}.onnx", model.to_onnx()
    save(proto, meta, path)
    res_t = evaluate(path, te, snrs=ZOO_SNRS, seed=args.seed)
    res_t.update(train_windows=len(tr), train_seconds=round(secs, 1))
    ltr, lte = load_split(recs, args.window, args.hop, (3,), classes)
    lmodel, lsecs = _train(mod, arch, ltr, args.seed, opts, getattr(args, "quiet", False))
    with tempfile.TemporaryDirectory() as d:
        lpath = Path(d) / f"{name}_load.onnx"
        save(lmodel.to_onnx(), dataclasses.replace(meta, trained_on="loads 0-2"), lpath)
        res_l = evaluate(lpath, lte, snrs=ZOO_SNRS, seed=args.seed)
    res_l.update(train_windows=len(ltr), train_seconds=round(lsecs, 1), test_loads=[3])
    save(proto, dataclasses.replace(meta, metrics={**_summary(res_t, "time_"), **_summary(res_l, "load3_")}), path)
    metrics = {"name": name, "arch": model.arch, "classes": list(classes), "window": args.window,
               "hop": args.hop, "fs": tr.fs, "seed": args.seed, "opts": {k: str(v) for k, v in opts.items()},
               "data": {"dir": str(args.data), "n_recordings": len(recs), "recordings": [r.source for r in recs]},
               "time_split": res_t, "load_split": res_l, "onnx_bytes": path.stat().st_size,
               "reproduce": f"edgevib models build-zoo --data {args.data} --out {out} --archs {arch} "
                            f"--seed {args.seed}" + (f" --classes {args.classes}" if args.classes else "") + "".join(f" --opt {o}" for o in args.opt or [])}
    write_report(res_t, out, name)
    (out / f"{name}.json").write_text(json.dumps(metrics, indent=2))
    write_card(metrics, out / f"{name}.md")
    _print_result(res_t, f"{name}: time split")
    _print_result(res_l, f"{name}: load 3 held out")
    return metrics


def cmd_build_zoo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for arch in args.archs:
        build_one(arch, args, out)
    return 0


def _data_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        p.add_argument("--data", type=Path, action="append", required=True,
                       help="data folder; repeatable for rig-out (a folder per rig, or a folder of rigs)")
    else:
        p.add_argument("--data", type=Path, required=True, help="folder of CWRU .npz/.mat recordings")
    p.add_argument("--split", choices=("time", "load"), default="time",
                   help="time: last part of each recording tests; load: whole recordings at --test-loads test")
    p.add_argument("--test-frac", type=float, default=0.3, help="time split: fraction of each recording tested")
    p.add_argument("--test-loads", type=int, nargs="+", default=[3], help="load split: motor loads held out")
    p.add_argument("--snr", type=float, nargs="*", default=[], metavar="DB", help="also evaluate with white noise")
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    """Add ``models`` and its subcommands to the ``edgevib`` parser."""
    p = subparsers.add_parser("models", help="train, evaluate and ship bearing-fault models",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])

    t = sub.add_parser("train", help="train a model on a leak-free split and save it as ONNX")
    t.add_argument("--arch", choices=archs.names(data="windows"), required=True)
    _data_args(t)
    t.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    t.add_argument("--classes", default=None, help="'10' (default), '4' (fault types) or a comma list")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (cnn)")
    t.add_argument("--window", type=int, default=2048)
    t.add_argument("--hop", type=int, default=1024)
    t.add_argument("--opt", action="append", metavar="KEY=VALUE", help="trainer option, repeatable")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate an ONNX model (split protocols), or the fault-type recipe "
                       "leave-one-rig-out (--protocol rig-out)")
    e.add_argument("--model", type=Path, default=None, help="the ONNX model (split protocols)")
    e.add_argument("--protocol", choices=("split", "rig-out"), default="split",
                   help="split: --split within one folder; rig-out: train on all rigs but one, test on it")
    e.add_argument("--sim", type=int, default=240, help="rig-out: simulated bearings added to training")
    e.add_argument("--out", type=Path, default=None, help="rig-out: write the JSON report here")
    _data_args(e, many=True)
    e.add_argument("--out-dir", type=Path, default=Path("eval-out"), help="where the JSON and PNG go")
    e.add_argument("--json", action="store_true", help="print the full JSON result")
    e.set_defaults(func=cmd_eval)

    z = sub.add_parser("build-zoo", help="train and evaluate both architectures, write models and cards")
    z.add_argument("--data", type=Path, required=True)
    z.add_argument("--out", type=Path, default=Path("models/zoo"))
    z.add_argument("--archs", nargs="+", choices=archs.names(data="windows"), default=["cnn", "nsae-lcn"])
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--classes", default=None, help="'10' (default), '4' or a comma list")
    z.add_argument("--window", type=int, default=2048)
    z.add_argument("--hop", type=int, default=1024)
    z.add_argument("--opt", action="append", metavar="KEY=VALUE", help="trainer option for every arch")
    z.set_defaults(func=cmd_build_zoo)

    # keygen, list, add, push, rollback: signed models and staged rollouts (docs/updates.md)
    from edgevib.models.registry_cli import add_parsers as add_registry

    add_registry(sub)
    from edgevib.models.faulttype_cli import add_parsers as add_faulttype

    add_faulttype(sub)
    # The compress parser imports torch only when the command runs.
    from edgevib.models.compress.cli import add_parser as add_compress

    add_compress(sub)
