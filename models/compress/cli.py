"""``edgevib models compress``: the parser and handler, for ``edgevib.models.cli`` to mount.

>>> import argparse
>>> sub = argparse.ArgumentParser(prog="edgevib models").add_subparsers()
>>> p = add_parser(sub)
>>> a = p.parse_args(["--model", "m.pt", "--data-free", "--out", "s.onnx"])
>>> a.recipe, a.data_free, a.synth, a.func is run
('slim,merge,kd,int8', True, 'deepinversion', True)
>>> p.parse_args(["--model", "m.pt", "--data", "d", "--out", "s.onnx", "--opt", "sparse_steps=0",
...               "--opt", "keep_width=16"]).opt
['sparse_steps=0', 'keep_width=16']
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from edgevib.errors import EdgevibError

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compress`` sub-command to ``subparsers``; sets ``func=run``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "compress", help="shrink a CNN: slimming, SIMD-aligned pruning, merging, distillation, INT8, DFQ, ZAQ",
        description="Compress a trained CNN (.pt checkpoint; .onnx for --recipe int8 only) into a small "
                    "ONNX model with the same contract.")
    p.add_argument("--model", required=True, help="teacher checkpoint (.pt) or ONNX model (int8 only)")
    p.add_argument("--recipe", default="slim,merge,kd,int8",
                   help="steps among slim,align,merge,kd,nkd,int8,dfq,zaq (dfq/zaq alone need no windows)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of CWRU recordings for training/calibration windows")
    src.add_argument("--data-free", action="store_true", help="synthesise windows from the teacher instead")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--synth", choices=("deepinversion", "kegnet"), default="deepinversion",
                   help="data-free window source (with --data-free)")
    p.add_argument("--align", type=int, default=16, help="align: channel multiple (SIMD float32 lanes)")
    p.add_argument("--align-first", type=int, default=0,
                   help="align: channel multiple of the wide first conv alone (0: --align; 8 = the targets recipe)")
    p.add_argument("--opt", action="append", default=[], metavar="K=V",
                   help="a field of models.compress.pipeline.Options, repeatable (docs/compression.md gives the "
                        "shipped cnn_small's recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler: 0 on success, 2 on a bad input (the error names the fix)."""
    from edgevib.models.compress.pipeline import compress, parse_options

    from edgevib.progress import Bar

    try:
        opts = {"synth": args.synth, "align": args.align, "align_first": args.align_first,
                **parse_options(args.opt)}
        out = compress(args.model, args.recipe, data_dir=args.data, data_free=args.data_free, out=args.out,
                       progress=Bar("compress"), seed=args.seed, **opts)
    except EdgevibError as exc:
        log.error("%s", exc)
        print(f"error: {exc}")
        return 2
    print(out)
    return 0
