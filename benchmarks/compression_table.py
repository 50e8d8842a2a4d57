"""Regenerate the compression table: ``python benchmarks/compression_table.py --data DIR --out docs/``.

Trains (or loads, ``--teacher``) the WDCNN teacher on CWRU loads 0-2 (first 70 % of each
recording), runs the real-data recipe ``slim,merge,kd,int8``, the dynamic-INT8 variant,
pruning of the plain teacher with and without neuron merging, and the data-free path; then
measures every stage side by side (parameters, ONNX bytes, ONNX Runtime ms/window at 1
thread for batch 1 and 32, accuracy on the time split, the load-3 hold-out and SNR 0/-4 dB)
and writes ``compression_table.{md,json,png}`` under ``--out``. ``--zoo`` also writes
``models/zoo/cnn_small.onnx`` (the real-data final model). Prints a report with the targets.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgevib.models import cnn
from edgevib.models.classes import CLASSES_10
from edgevib.models.compress import arch, merging, onnxio, pipeline, quantize, slimming, table
from edgevib.models.compress.data import splits

log = logging.getLogger("compression_table")
TRAINED_ON = "CWRU drive end 12 kHz, loads 0-2, first 70% of each recording (time split)"


def teacher_model(args: argparse.Namespace, sp: Any) -> tuple[cnn.CNNModel, dict[str, str]]:
    """Load ``--teacher`` if it exists, else train one and save it there."""
    p = Path(args.teacher)
    if p.exists():
        return arch.load_checkpoint(p)
    t0 = time.monotonic()
    model = cnn.train(sp.train, seed=args.seed, epochs=args.epochs, threads=args.threads, envelope=args.envelope)
    meta = onnxio.base_meta(model.classes, model.fs, model.window, "cnn", trained_on=TRAINED_ON)
    arch.save_checkpoint(model, p, meta)
    log.info("teacher trained in %.0f s, saved to %s", time.monotonic() - t0, p)
    return model, meta


def model_card(final: dict[str, Any], base: dict[str, Any], targets: dict[str, Any], meta: dict[str, str],
               shape: dict[str, Any]) -> str:
    """The model card written beside ``cnn_small.onnx`` (numbers from this run)."""
    pct = {k: f"{100 * final[k]:.1f} %" for k in ("acc_time", "acc_load3", "acc_snr0", "acc_snr-4")}
    return f"""# cnn_small.onnx: compressed WDCNN (`{meta['edgevib.arch']}`)

Written by `python benchmarks/compression_table.py --data ../shared/cwru --out docs --zoo`; see
`docs/compression.md` for the methods and `docs/compression_table.md` for every stage.

- Contract: input `x` float32 [N, 1, {meta['edgevib.window']}] raw g at {meta['edgevib.sample_rate']} Hz,
  output `probs` [N, {len(json.loads(meta['edgevib.classes']))}]; classes {meta['edgevib.classes']}.
- Trained on: {meta['edgevib.trained_on']}.
- Shape: conv widths {shape['widths']}, hidden {shape['hidden']}, {final['params']:,} parameters
  (teacher {base['params']:,}); static INT8 (QDQ, per-channel weights, uint8 activations).
- File: {final['onnx_bytes']:,} bytes ({targets['smaller_x']:.1f}x smaller than the teacher's {base['onnx_bytes']:,}).
- ONNX Runtime CPU, 1 thread, ms per window: batch 1 {final['ms_b1']:.3f} (teacher {base['ms_b1']:.3f}),
  batch 32 {final['ms_b32']:.3f} (teacher {base['ms_b32']:.3f}), measured side by side in one run.
- Accuracy: time split {pct['acc_time']}, load-3 hold-out {pct['acc_load3']}, SNR 0 dB {pct['acc_snr0']},
  SNR -4 dB {pct['acc_snr-4']} (teacher: {100 * base['acc_time']:.1f} / {100 * base['acc_load3']:.1f} /
  {100 * base['acc_snr0']:.1f} / {100 * base['acc_snr-4']:.1f} %).
- Limits: CWRU drive-end only (one rig); accuracy drop versus the teacher is
  {targets['drop_time_pts']:.1f} points on the time split and {targets['drop_snr0_pts']:.1f} at SNR 0 dB.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CWRU folder (../shared/cwru)")
    ap.add_argument("--out", default="docs", help="folder for compression_table.{md,json,png}")
    ap.add_argument("--teacher", default="/tmp/edgevib-compress/teacher.pt", help=".pt checkpoint (trained if absent)")
    ap.add_argument("--epochs", type=int, default=20, help="teacher epochs when training one")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--envelope", type=int, default=0,
                    help="envelope-spectrum bands of a newly trained teacher (0: the plain WDCNN)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=30, help="latency rounds (interleaved)")
    ap.add_argument("--zoo", action="store_true", help="also write models/zoo/cnn_small.onnx")
    ap.add_argument("--opt", action="append", default=[], metavar="K=V", help="pipeline.Options override")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    opts: dict[str, Any] = {k: (float(v) if "." in v or "e" in v else int(v))
                            for k, v in (o.split("=", 1) for o in args.opt)}
    clock: dict[str, float] = {}
    t = time.monotonic()
    sp = splits(args.data, CLASSES_10)
    teacher, meta = teacher_model(args, sp)
    meta = meta or onnxio.base_meta(teacher.classes, teacher.fs, teacher.window, "cnn", trained_on=TRAINED_ON)
    clock["data+teacher_s"] = time.monotonic() - t

    t = time.monotonic()
    real = pipeline.run(teacher, "slim,merge,kd,int8", train=sp.train, meta=meta, seed=args.seed, **opts)
    clock["real_path_s"] = time.monotonic() - t
    o = pipeline.Options(**opts)
    # neuron merging without sparsity training: prune the plain teacher by |gamma|
    keep = slimming.global_keep(teacher.net, o.demo_ratio)
    plain_pruned = slimming.prune(teacher.net, keep)
    plain_merged, plain_rep = merging.merge_prune(teacher.net, keep, threshold=o.merge_threshold)
    # the data-free path prunes as many channels as the real one, so the two compare like for like
    n_all = sum(u.bn.num_features for u in slimming.units(teacher.net))
    n_kept = sum(u.bn.num_features for u in slimming.units(real[-2].net))
    free_opts = {**opts, "prune_ratio": 1 - n_kept / n_all}
    t = time.monotonic()
    free = pipeline.run(teacher, "slim,merge,kd,int8", data_free=True, meta=meta, seed=args.seed, **free_opts)
    clock["datafree_path_s"] = time.monotonic() - t

    def onnx_of(net: Any, name: str) -> Any:
        return pipeline._onnx(net, teacher, meta, name)

    kd = real[-2]
    rows_in = [(s.name, s.proto, arch.n_params(s.net)) for s in real]
    rows_in.append((kd.name + "+int8dyn", quantize.quantize_int8_dynamic(kd.proto), arch.n_params(kd.net)))
    rows_in += [("cnn-pruned(no sparsity)", onnx_of(plain_pruned, "p"), arch.n_params(plain_pruned)),
                ("cnn-pruned(no sparsity)+merge", onnx_of(plain_merged, "m"), arch.n_params(plain_merged))]
    rows_in += [("datafree:" + s.name, s.proto, arch.n_params(s.net)) for s in free[1:]]
    x_time, y_time = sp.test_time.x3d(), sp.test_time.y
    tests = {"acc_time": (x_time, y_time), "acc_load3": (sp.test_load.x3d(), sp.test_load.y),
             "acc_snr0": (table.add_noise(x_time, 0.0, args.seed), y_time),
             "acc_snr-4": (table.add_noise(x_time, -4.0, args.seed), y_time)}
    t = time.monotonic()
    rows = table.measure(rows_in, tests, window=teacher.window, rounds=args.rounds)
    clock["measure_s"] = time.monotonic() - t
    by = {r["stage"]: r for r in rows}
    base, final, fdf = by["cnn"], by[real[-1].name], by["datafree:" + free[-1].name]
    pr, mg = by["cnn+slim(pruned)"], by["cnn+slim+merge"]
    ppr, pmg = by["cnn-pruned(no sparsity)"], by["cnn-pruned(no sparsity)+merge"]

    def recovered(pruned: dict[str, Any], merged: dict[str, Any]) -> float | None:
        lost = base["acc_time"] - pruned["acc_time"]
        return None if lost <= 0 else (merged["acc_time"] - pruned["acc_time"]) / lost

    targets = {
        "smaller_x": base["onnx_bytes"] / final["onnx_bytes"],
        "faster_x_b1": base["ms_b1"] / final["ms_b1"], "faster_x_b32": base["ms_b32"] / final["ms_b32"],
        "drop_time_pts": 100 * (base["acc_time"] - final["acc_time"]),
        "drop_snr0_pts": 100 * (base["acc_snr0"] - final["acc_snr0"]),
        "merge_recovered_slim": recovered(pr, mg), "merge_recovered_plain": recovered(ppr, pmg),
        "datafree_gap_time_pts": 100 * (final["acc_time"] - fdf["acc_time"]),
        "datafree_gap_snr0_pts": 100 * (final["acc_snr0"] - fdf["acc_snr0"]),
    }
    extra = {"targets": targets, "clock": clock, "options": vars(o), "datafree_options": free_opts,
             "trained_on": TRAINED_ON,
             "merge_slim": real[2].info, "merge_plain": [vars(r) for r in plain_rep],
             "widths_final": arch.arch_kwargs(kd.net), "test_windows": {k: len(v[1]) for k, v in tests.items()},
             "cpu_threads_latency": 1, "onnxruntime": table.ort.__version__}
    files = table.write(rows, args.out, "compression_table", ref="cnn", extra=extra)
    print(table.markdown(rows, "cnn"))
    print(json.dumps({"targets": targets, "clock": clock}, indent=2))
    if args.zoo:
        zoo = Path(__file__).resolve().parents[1] / "models" / "zoo" / "cnn_small.onnx"
        proto = copy.deepcopy(real[-1].proto)
        m = onnxio.read_meta(proto)
        m["edgevib.metrics"] = json.dumps({k: round(final[k], 4) for k in tests} | {"onnx_bytes": final["onnx_bytes"]})
        onnxio.save(proto, m, zoo)
        zoo.with_suffix(".md").write_text(model_card(final, base, targets, m, arch.arch_kwargs(kd.net)))
        files += [zoo, zoo.with_suffix(".md")]
    print("wrote", *files, file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
