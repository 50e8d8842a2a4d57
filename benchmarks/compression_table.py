"""Regenerate the compression table: ``python benchmarks/compression_table.py --data DIR --out docs/``.

Trains (or loads, ``--teacher``) the WDCNN teacher on CWRU loads 0-2 (first 70 % of each
recording), runs the real-data recipe ``slim,merge,kd,int8`` (plus ``dfq`` on its student),
the dynamic-INT8 variant, pruning of the plain teacher with and without neuron merging,
Scalpel-aligned pruning (``slim,align,merge,kd,int8`` at 16 and 8 channels), noise-robust
distillation (``slim,merge,nkd,int8``), DFQ and ZAQ of the teacher (per-channel and
per-tensor int8), and the data-free paths (DeepInversion and KegNet windows); then measures
every stage side by side (parameters, ONNX bytes, ONNX Runtime ms/window at 1 thread for
batch 1 and 32, accuracy on the time split, the load-3 hold-out and SNR 0/-4 dB) and writes
``compression_table.{md,json,png}`` under ``--out``. It also measures the shipped fault-type
model (``models/zoo/faulttype.onnx``: size, ONNX Runtime latency, order-feature cost,
leave-one-rig-out accuracy) with ``--bearings``, and probes the latency of SIMD-aligned vs
unaligned channel counts (random weights; ``--probe-only`` runs just that). Prints a report with the targets.
``--only inherit --zoo`` writes ``models/zoo/cnn_small.onnx`` and its model card: the INT8 model of
:data:`INHERIT_RECIPE`, the recipe that met the targets under both protocols (docs/compression.md).
``--only wgroup,scalpel,integral`` runs only the hardware-aware weight/activation pruning rows
(:mod:`edgevib.models.compress.wgroup`) beside the teacher, plus ONNX Runtime's sparse paths
(sparse initializers, SparseToDenseMatMul), into ``compression_wgroup.{md,json,png}``.
``--only dfnkd,target`` runs the data-free noise-robust distillation rows (DeepInversion windows
with white noise on the student's copies) and the targets recipe (``TARGET_RECIPE``, fixed before
its run) beside the teacher and their reference paths, with repeated latency measurements, into
``compression_targets.{md,json,png}``. ``--only dfnkdt`` runs data-free ``nkd`` with the teacher's
targets from the same noisy synthetic windows (``noise_teacher``) beside the real-data ``kd`` path and the
data-free ``kd`` and ``nkd`` paths, into ``compression_dfnoise.{md,json,png}``.
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
from edgevib.models.compress import (
    arch,
    dfq,
    merging,
    onnxio,
    pipeline,
    quantize,
    slimming,
    table,
    training,
    wgroup,
)
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


def data_and_teacher(args: argparse.Namespace) -> tuple[Any, cnn.CNNModel, dict[str, str]]:
    """The CWRU splits, the teacher (trained if ``--teacher`` is absent) and its contract metadata."""
    sp = splits(args.data, CLASSES_10)
    teacher, meta = teacher_model(args, sp)
    return sp, teacher, meta or onnxio.base_meta(teacher.classes, teacher.fs, teacher.window, "cnn",
                                                 trained_on=TRAINED_ON)


def real_calib(sp: Any, o: pipeline.Options) -> Any:
    """The pipeline's calibration windows (same seed and count) from the training split."""
    idx = np.random.default_rng(o.seed).permutation(len(sp.train))[:o.calib_windows]
    return sp.train.x3d()[np.sort(idx)]


def cpu_name() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def faulttype_row(cwru: str, bearings: str, rounds: int) -> dict[str, Any]:
    """The shipped fault-type model: parameters, bytes, ONNX Runtime ms/window (its LR graph at
    batch 1 and 32, one thread), order-feature cost per window (numpy, this process) and the
    leave-one-rig-out accuracy (models.rigout, the product's protocol)."""
    import onnx
    from edgevib.models.data import load_dir
    from edgevib.models.faulttype import features_of, simulated
    from edgevib.models.rigout import rig_out

    zoo = Path(__file__).resolve().parents[1] / "models" / "zoo" / "faulttype.onnx"
    proto = onnx.load(str(zoo))
    params = int(sum(np.prod(i.dims) for i in proto.graph.initializer if i.name in ("weight", "bias")))
    sess = table.session(proto)
    n_feat = int(proto.graph.input[1].type.tensor_type.shape.dim[1].dim_value)
    window = int(proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value)
    ms: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for b in (1, 32):
        feed = {"x": np.zeros((b, 1, window), np.float32), "orders": rng.standard_normal((b, n_feat)).astype(np.float32)}
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(20):
                sess.run(["probs"], feed)
            times.append((time.perf_counter() - t0) / (20 * b) * 1e3)
        ms[f"ms_b{b}"] = float(np.percentile(times, 25))
    recs = load_dir(cwru) + load_dir(bearings)
    t0 = time.perf_counter()
    real = features_of(recs)
    feat_ms = (time.perf_counter() - t0) / len(real.y) * 1e3  # includes resampling to 12 kHz
    sim = features_of(simulated(240))
    res = rig_out(real, sim)
    return {"stage": "faulttype (shipped LR)", "params": params, "onnx_bytes": zoo.stat().st_size, **ms,
            "features_ms_per_window": feat_ms, "windows": int(len(real.y)), "window": window,
            "loro_window_acc": res["mean"]["window_acc"], "loro_recording_acc": res["mean"]["recording_acc"],
            "loro_by_rig": {k: v["window_acc"] for k, v in res["rigs"].items()},
            "int8": faulttype_int8_loro(real, sim, window)}


def faulttype_int8_loro(real: Any, sim: Any, window: int) -> dict[str, Any]:
    """Static INT8 of the fault-type LR under leave-one-rig-out: each fold's LR (trained as
    ``models.rigout`` trains it) quantized by ONNX Runtime, calibrated on that fold's training
    features only, scored on the held-out rig beside its float twin."""
    import tempfile

    from edgevib.models.faulttype import FeatureSet, train
    from edgevib.models.rigout import score
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self, feats: np.ndarray) -> None:
            self.parts = [feats[i:i + 256] for i in range(0, len(feats), 256)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            if not self.parts:
                return None
            f = self.parts.pop(0)
            return {"x": np.zeros((len(f), 1, window), np.float32), "orders": f.astype(np.float32)}

    out: dict[str, Any] = {"rigs": {}}
    for rig in [str(r) for r in np.unique(real.rig)]:
        held = real.rig == rig
        tr, test = FeatureSet.concat([real.select(~held), sim]), real.select(held)
        model = train(tr)
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "lr.onnx", Path(d) / "lr8.onnx"
            import onnx

            onnx.save(model.to_onnx(window), str(src))
            quantize.q.quantize_static(str(src), str(dst), Reader(tr.x), quant_format=quantize.q.QuantFormat.QDQ,
                                       per_channel=True, activation_type=quantize.q.QuantType.QUInt8,
                                       weight_type=quantize.q.QuantType.QInt8, op_types_to_quantize=["MatMul"])
            q8 = onnx.load(str(dst))
        feed = {"x": np.zeros((len(test.y), 1, window), np.float32), "orders": test.x.astype(np.float32)}
        probs8 = table.session(q8).run(["probs"], feed)[0]
        out["rigs"][rig] = {"float": score(model.predict_proba(test.x), test)["window_acc"],
                            "int8": score(probs8, test)["window_acc"]}
        out["int8_bytes"] = len(q8.SerializeToString())
        out["float_bytes"] = len(model.to_onnx(window).SerializeToString())
    for k in ("float", "int8"):
        out[f"loro_window_acc_{k}"] = round(float(np.mean([v[k] for v in out["rigs"].values()])), 4)
    return out


PROBE_SHAPES = {  # conv widths, hidden: the slimmed shape of one run, aligned versions, an odd one
    "slim [7,16,15,10,15]/98": ([7, 16, 15, 10, 15], 98), "odd [9,17,17,9,17]/97": ([9, 17, 17, 9, 17], 97),
    "align8 [8,16,16,8,16]/96": ([8, 16, 16, 8, 16], 96), "align16 [16]*5/96": ([16] * 5, 96),
    "teacher [16,32,64,64,64]/100": ([16, 32, 64, 64, 64], 100)}


def align_probe(rounds: int) -> dict[str, dict[str, float]]:
    """Latency only (random weights, seeded): does a SIMD-aligned channel count run faster than
    an unaligned one with fewer multiply-adds? FP32 and data-free INT8 (DFQ) of each shape."""
    from edgevib.models.cnn import build_wdcnn

    sessions = {}
    for name, (widths, hidden) in PROBE_SHAPES.items():
        torch.manual_seed(0)
        net = build_wdcnn(10, widths, hidden=hidden, envelope=0).eval()
        model = cnn.CNNModel(net, tuple(CLASSES_10))
        meta = onnxio.base_meta(model.classes, model.fs, model.window, "cnn")
        folded, stats = dfq.dfq(net)
        sessions[f"{name} fp32"] = table.session(pipeline._onnx(net, model, meta, "cnn"))
        sessions[f"{name} int8"] = table.session(
            dfq.quantize_data_free(pipeline._onnx(folded, model, meta, "cnn"), folded, stats))
    lat = table.latency_ms(sessions, 2048, rounds=rounds)
    return {k: {"ms_b1": v[1], "ms_b32": v[32]} for k, v in lat.items()}


def test_sets(sp: Any, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The table's test sets: time split, load-3 hold-out, time split at SNR 0 and -4 dB (seeded)."""
    x_time, y_time = sp.test_time.x3d(), sp.test_time.y
    return {"acc_time": (x_time, y_time), "acc_load3": (sp.test_load.x3d(), sp.test_load.y),
            "acc_snr0": (table.add_noise(x_time, 0.0, seed), y_time),
            "acc_snr-4": (table.add_noise(x_time, -4.0, seed), y_time)}


def sparse_initializers(proto: Any, min_zero: float = 0.3) -> Any:
    """A copy of ``proto`` whose float initializers with >= ``min_zero`` zeros are ONNX sparse
    initializers (COO: float32 values + int64 linear indices, the only index type ONNX allows)."""
    import onnx
    from onnx import numpy_helper

    out = copy.deepcopy(proto)
    dense = []
    for init in out.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32 or a.size < 64 or np.mean(a == 0) < min_zero:
            dense.append(init)
            continue
        flat = a.ravel()
        idx = np.flatnonzero(flat).astype(np.int64)
        out.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(
            numpy_helper.from_array(flat[idx], init.name), numpy_helper.from_array(idx, init.name + "_idx"), a.shape))
    del out.graph.initializer[:]
    out.graph.initializer.extend(dense)
    return out


def sparse_matmul_probe(w: np.ndarray, rounds: int) -> dict[str, float]:
    """ms per call of ``x @ w.T`` (``w`` [out, in]; x [1, in] and [32, in]) through ONNX Runtime's
    dense MatMul vs its only sparse CPU kernel, com.microsoft SparseToDenseMatMul (A sparse, B
    dense: ``(w @ x.T).T``). ORT densifies sparse *initializers* at load, so the kernel takes
    ``w`` as a sparse graph input, fed as an OrtValue (COO and CSR), one thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.ascontiguousarray(w, np.float32)
    o, i = w.shape
    x_info, y_info = (helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", i]),
                      helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", o]))
    dense = helper.make_graph([helper.make_node("MatMul", ["x", "wt"], ["y"])], "dense", [x_info], [y_info],
                              [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")])
    sparse = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
         helper.make_node("SparseToDenseMatMul", ["w", "xt"], ["yt"], domain="com.microsoft"),
         helper.make_node("Transpose", ["yt"], ["y"], perm=[1, 0])], "sparse",
        [helper.make_sparse_tensor_value_info("w", TensorProto.FLOAT, [o, i]), x_info], [y_info])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    d_sess = table.session(helper.make_model(dense, opset_imports=opsets))
    s_sess = table.session(helper.make_model(sparse, opset_imports=opsets))
    dev = ort.OrtDevice.make("cpu", 0)
    rows, cols = np.nonzero(w)
    vals = np.ascontiguousarray(w[rows, cols])
    shape = np.array([o, i], np.int64)
    coo = ort.SparseTensor.sparse_coo_from_numpy(shape, vals, np.stack([rows, cols], 1).astype(np.int64).ravel(), dev)
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(w, axis=1))]).astype(np.int64)
    csr = ort.SparseTensor.sparse_csr_from_numpy(shape, vals, cols.astype(np.int64), indptr, dev)
    w_vals = {"coo": ort.OrtValue.ort_value_from_sparse_tensor(coo), "csr": ort.OrtValue.ort_value_from_sparse_tensor(csr)}
    out: dict[str, float] = {"zero_fraction": float(np.mean(w == 0))}
    rng = np.random.default_rng(0)
    for b in (1, 32):
        x = rng.standard_normal((b, i)).astype(np.float32)
        xv = ort.OrtValue.ortvalue_from_numpy(x)
        runs: dict[str, Any] = {"dense": lambda x=x: d_sess.run(["y"], {"x": x})[0]}
        for k, v in w_vals.items():
            runs[f"sparse_{k}"] = lambda v=v, xv=xv: s_sess.run_with_ort_values(["y"], {"w": v, "x": xv})[0].numpy()
        ref = runs["dense"]()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for k, f in runs.items():
            out[f"{k}_max_abs_diff_b{b}"] = float(np.max(np.abs(f() - ref)))
        for _ in range(rounds):
            for k, f in runs.items():
                t0 = time.perf_counter()
                for _ in range(200):
                    f()
                times[k].append((time.perf_counter() - t0) / 200 * 1e3)
        for k in runs:
            out[f"{k}_ms_b{b}"] = float(np.percentile(times[k], 25))
    return out


def wgroup_rows(args: argparse.Namespace, opts: dict[str, Any], only: list[str]) -> int:
    """``--only wgroup,integral``: the teacher, Scalpel weight-group pruning (8 and 16 lanes, then
    static INT8 of the 8-lane one) and integral pruning, measured side by side with the teacher
    only; writes ``compression_wgroup.{md,json,png}`` under ``--out``."""
    bad = sorted(set(only) - {"wgroup", "integral", "scalpel"})
    if bad:
        raise SystemExit(f"compression_table: --only {','.join(bad)}: use some of wgroup,integral,scalpel")
    clock: dict[str, float] = {}
    t = time.monotonic()
    sp, teacher, meta = data_and_teacher(args)
    clock["data+teacher_s"] = time.monotonic() - t
    o = pipeline.Options(**opts)
    batches = training.window_batches(sp.train, seed=args.seed)
    calib = real_calib(sp, o)
    tests = test_sets(sp, args.seed)
    t_net = teacher.net.eval()
    stages: list[tuple[str, Any, int]] = [("cnn", pipeline._onnx(t_net, teacher, meta, "cnn"), arch.n_params(t_net))]
    # the teacher's own static INT8 (same calibration): what the pruned INT8 rows compare against
    stages.append(("cnn+int8", quantize.quantize_int8_static(stages[0][1], calib), arch.n_params(t_net)))
    x_time = tests["acc_time"][0]
    info: dict[str, Any] = {"cnn": {"weights": wgroup.weight_report(t_net, 8),
                                    "act_sparsity_time": wgroup.act_sparsity(t_net, x_time)}}
    kd = {"steps": o.kd_steps, "temperature": o.temperature, "alpha": o.alpha, "lr": o.kd_lr, "seed": args.seed}
    plain_rows: dict[str, Any] = {}

    def add(name: str, net: Any, width: int, **more: Any) -> Any:
        proto = pipeline._onnx(net, teacher, meta, name)
        stages.append((name, proto, arch.n_params(net)))
        sparse = sparse_initializers(proto)
        sess = table.session(sparse)  # ONNX Runtime loads sparse initializers (densified at load)
        same = float(np.mean(table.predict(sess, x_time) == table.predict(table.session(proto), x_time)))
        info[name] = {"weights": wgroup.weight_report(net, width), "act_sparsity_time": wgroup.act_sparsity(net, x_time),
                      "onnx_sparse_initializer_bytes": len(sparse.SerializeToString()),
                      "sparse_initializer_same_predictions": same, **more}
        return proto

    ratios = [float(r) for r in str(args.wgroup_ratio).split(",")]
    if "wgroup" in only:
        for ratio in ratios:
            for width in (8, 16):
                t = time.monotonic()
                net = wgroup.mask(copy.deepcopy(t_net), wgroup.group_masks(t_net, width, ratio))
                wgroup.finetune(net, t_net, batches, **kd)
                name = f"cnn+wgroup{width}({ratio:.0%})+kd"
                plain_rows[name] = add(name, wgroup.finish(net), width, ratio=ratio)
                clock[f"{name}_s"] = time.monotonic() - t
                if width == 8:
                    stages.append((name + "+int8", quantize.quantize_int8_static(plain_rows[name], calib),
                                   arch.n_params(net)))
                    if ratio == ratios[0]:
                        info[name]["hidden_weight"] = net.head[1].weight.detach().numpy().copy()
    if "scalpel" in only:  # node pruning (slim + align 8) then 8-lane weight groups: both halves of Scalpel
        t = time.monotonic()
        st = pipeline.run(teacher, "slim,align,merge,kd", train=sp.train, meta=meta, seed=args.seed,
                          **{**opts, "align": 8})
        student = st[-1].net
        stages.append((st[-1].name.replace("+align", "+align8"), st[-1].proto, arch.n_params(student)))
        stages.append((stages[-1][0] + "+int8", quantize.quantize_int8_static(st[-1].proto, calib),
                       arch.n_params(student)))
        for ratio in ratios:
            net = wgroup.mask(copy.deepcopy(student), wgroup.group_masks(student, 8, ratio))
            wgroup.finetune(net, t_net, batches, **kd)
            name = st[-1].name.replace("+align", "+align8") + f"+wgroup8({ratio:.0%})+kd"
            proto = add(name, wgroup.finish(net), 8, ratio=ratio)
            stages.append((name + "+int8", quantize.quantize_int8_static(proto, calib), arch.n_params(net)))
        clock["scalpel_s"] = time.monotonic() - t
    if "integral" in only:
        for q in (float(v) for v in str(args.act_quantile).split(",")):
            t = time.monotonic()
            net = wgroup.mask(copy.deepcopy(t_net), wgroup.group_masks(t_net, 8, ratios[0]))
            thetas = wgroup.act_thresholds(t_net, torch.from_numpy(calib), q)
            wgroup.set_thresholds(net, thetas)
            wgroup.finetune(net, t_net, batches, act_l1=args.act_l1, **kd)
            name = f"cnn+integral8({ratios[0]:.0%},q{q:g})+kd"
            add(name, wgroup.finish(net), 8, ratio=ratios[0], act_quantile=q, act_l1=args.act_l1, thetas=thetas)
            clock[f"{name}_s"] = time.monotonic() - t
    probe = {}
    hw = next((v.pop("hidden_weight") for v in info.values() if "hidden_weight" in v), None)
    load = {"before": Path("/proc/loadavg").read_text().split()[:3]}
    t = time.monotonic()
    if hw is not None:
        probe["hidden_dense_of_wgroup8"] = sparse_matmul_probe(hw, max(10, args.rounds // 3))
        probe["hidden_dense_of_teacher"] = sparse_matmul_probe(t_net.head[1].weight.detach().numpy(),
                                                               max(10, args.rounds // 3))
    rows = table.measure(stages, tests, window=teacher.window, rounds=args.rounds)
    clock["measure_s"] = time.monotonic() - t
    load["after"] = Path("/proc/loadavg").read_text().split()[:3]
    extra = {"info": info, "sparse_matmul_probe": probe, "clock": clock, "loadavg": load, "options": vars(o),
             "wgroup_ratio": args.wgroup_ratio, "act_quantile": args.act_quantile, "act_l1": args.act_l1,
             "onnxruntime": table.ort.__version__, "cpu": cpu_name(), "cpu_threads_latency": 1}
    files = table.write(rows, args.out, "compression_wgroup", ref="cnn", extra=extra)
    print(table.markdown(rows, "cnn"))
    print(json.dumps({k: v for k, v in extra.items() if k != "options"}, indent=2, default=str))
    print("wrote", *files, file=sys.stderr)
    return 0


# the chosen recipe of the targets run (docs/compression.md, "Targets run"): fixed before it was measured
TARGET_RECIPE = ("slim,align,merge,kd,int8", {"align": 16, "align_first": 8})
# the teacher's own channels to fixed widths, no sparsity training: what met the leave-one-rig-out target
FIXED_WIDTHS = {"sparse_steps": 0, "keep_width": 16, "keep_hidden": 80}
# variants of the larger data-free noisy-teacher path, each run beside it (docs/compression.md, fixed before its run):
# --only key -> (row-name suffix, pipeline options)
DF_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"dfnkdt4fm": ("", {"kd_mixup": 1.0}),  # function matching: the pipeline names it "(mixup)"
               "dfnkdt4inh": ("(teacher channels)", {"sparse_steps": 0}),  # prune the teacher's gammas, no sparsity
               # ... to the fixed widths that worked under leave-one-rig-out
               "dfnkdt4fw": ("(teacher channels, 16 wide)", FIXED_WIDTHS),
               # ... and the shipped recipe's 6,000 distillation steps (INHERIT_RECIPE)
               "dfnkdt4fwk": ("(teacher channels, 16 wide, 6000 kd steps)", {**FIXED_WIDTHS, "kd_steps": 6000})}
# the recipe of the shipped models/zoo/cnn_small.onnx (--only inherit --zoo), which met the targets under both protocols
INHERIT_RECIPE = ("slim,align,merge,kd,int8", {"align": 16, **FIXED_WIDTHS, "kd_steps": 6000})
DF_ROWS = {"dfnkd", "dfnkdt", "dfnkdt4"}  # --only keys with data-free rows of their own (beside DF_VARIANTS)
TARGET_ROWS = {"target", "inherit", *DF_ROWS, *DF_VARIANTS}  # the --only keys target_rows runs


def target_rows(args: argparse.Namespace, opts: dict[str, Any], only: list[str]) -> int:
    """``--only dfnkd,target``: beside the teacher, in one interleaved latency measurement,
    ``dfnkd``: the real-data ``slim,merge,kd,int8`` and ``slim,merge,nkd,int8`` paths and the
    data-free (DeepInversion) ones with ``kd`` and ``nkd`` (noise on the synthetic windows only);
    ``target``: :data:`TARGET_RECIPE` beside the align16 and align8 ``kd`` paths; ``dfnkdt``: the real-data
    ``kd`` path, data-free ``kd`` and ``nkd``, and data-free ``nkd`` with the teacher scoring the same noisy
    synthetic copies (``noise_teacher``); ``dfnkdt4``: the same with 4x the synthetic windows (96 per class)
    beside data-free ``kd`` and ``nkd(noisy teacher)`` at 24; :data:`DF_VARIANTS`: the larger noisy-teacher path
    beside itself with function matching (``dfnkdt4fm``: ``kd_mixup=1``), without sparsity training at the matched
    prune ratio (``dfnkdt4inh``) or to :data:`FIXED_WIDTHS` (``dfnkdt4fw``, and with 6,000 kd steps ``dfnkdt4fwk``); ``inherit``: :data:`INHERIT_RECIPE`
    on real windows. Latency is then measured ``--latency-repeats`` times more on fresh
    sessions (speed ratios per repeat, load average around each). Writes ``compression_targets.{md,json,png}``
    under ``--out`` (``compression_dfnoise.*`` for a run without dfnkd and target, ``compression_dfnoise4.*``
    for dfnkdt4, ``compression_dfnoise<N><variant>.*`` for variants alone, e.g. ``compression_dfnoise16fm``,
    ``compression_inherit.*`` with ``inherit``)."""
    bad = sorted(set(only) - TARGET_ROWS)
    if bad:
        raise SystemExit(f"compression_table: --only {','.join(bad)}: use some of {','.join(sorted(TARGET_ROWS))}")
    clock: dict[str, float] = {}
    load: dict[str, Any] = {"start": Path("/proc/loadavg").read_text().split()[:3]}
    t = time.monotonic()
    sp, teacher, meta = data_and_teacher(args)
    clock["data+teacher_s"] = time.monotonic() - t
    o = pipeline.Options(**opts)
    paths: dict[str, list[pipeline.Stage]] = {}

    def path(key: str, recipe: str, **more: Any) -> list[pipeline.Stage]:
        t = time.monotonic()
        paths[key] = pipeline.run(teacher, recipe, meta=meta, seed=args.seed, **{**opts, **more})
        clock[f"{key}_path_s"] = time.monotonic() - t
        return paths[key]

    real = path("real", "slim,merge,kd,int8", train=sp.train)
    if "dfnkd" in only:
        path("real-nkd", "slim,merge,nkd,int8", train=sp.train)
    variants = [k for k in DF_VARIANTS if k in only]
    datafree = bool(set(only) & DF_ROWS or variants)
    variant_only = bool(variants) and not set(only) & DF_ROWS
    if datafree:
        # the data-free paths prune as many channels as the real one (as in the full table)
        n_all = sum(u.bn.num_features for u in slimming.units(teacher.net))
        n_kept = sum(u.bn.num_features for u in slimming.units(real[-2].net))
        free_ratio = 1 - n_kept / n_all
        if not variant_only:
            path("datafree", "slim,merge,kd,int8", data_free=True, prune_ratio=free_ratio)
        if not variant_only and "dfnkdt4" not in only:
            path("datafree-nkd", "slim,merge,nkd,int8", data_free=True, prune_ratio=free_ratio)
    if "dfnkdt" in only or "dfnkdt4" in only:  # the teacher scores the student's noisy copy (docs/compression.md)
        path("datafree-nkdt", "slim,merge,nkd,int8", data_free=True, prune_ratio=free_ratio, noise_teacher=True)
    if "dfnkdt4" in only or variants:  # the same with more synthetic windows (docs/compression.md)
        path("datafree-nkdt4", "slim,merge,nkd,int8", data_free=True, prune_ratio=free_ratio, noise_teacher=True,
             synth_per_class=args.nkdt_per_class)
    for key in variants:
        path("datafree-nkdt4" + key.removeprefix("dfnkdt4"), "slim,merge,nkd,int8", data_free=True,
             prune_ratio=free_ratio, noise_teacher=True, synth_per_class=args.nkdt_per_class, **DF_VARIANTS[key][1])
    if "target" in only:
        path("align16", "slim,align,merge,kd,int8", train=sp.train, align=16)
        path("align8", "slim,align,merge,kd,int8", train=sp.train, align=8)
        path("target", TARGET_RECIPE[0], train=sp.train, **TARGET_RECIPE[1])
    if "inherit" in only:
        path("inherit", INHERIT_RECIPE[0], train=sp.train, **INHERIT_RECIPE[1])
    names = {"align16": "+align16", "align8": "+align8", "target": "+align16(conv1:8)",
             "inherit": "+align16(teacher channels, 16 wide)"}
    rows_in: list[tuple[str, Any, int]] = [("cnn", real[0].proto, arch.n_params(real[0].net))]
    saw: dict[str, str] = {}
    row_of: dict[str, str] = {}
    for key, stages in paths.items():
        for s in stages[-2:]:  # the distilled float student and its INT8
            name = s.name.replace("+align", names.get(key, "+align"))
            name = ("datafree:" + name) if key.startswith("datafree") else name
            name = (name.replace("(noisy teacher)", f"(noisy teacher, {10 * args.nkdt_per_class} windows)"
                                 + DF_VARIANTS.get("dfnkdt4" + key.removeprefix("datafree-nkdt4"), ("",))[0])
                    if key.startswith("datafree-nkdt4") else name)
            rows_in.append((name, s.proto, arch.n_params(s.net)))
            row_of[key] = name  # the path's last row: its INT8 model
            if "saw" in s.info:
                saw[name] = s.info["saw"]
    tests = test_sets(sp, args.seed)
    load["before_measure"] = Path("/proc/loadavg").read_text().split()[:3]
    t = time.monotonic()
    rows = table.measure(rows_in, tests, window=teacher.window, rounds=args.rounds)
    clock["measure_s"] = time.monotonic() - t
    load["after_measure"] = Path("/proc/loadavg").read_text().split()[:3]
    # the same files timed again on fresh sessions: how much the speed ratios move between measurements
    repeats: list[dict[str, Any]] = []
    for i in range(args.latency_repeats):
        before = Path("/proc/loadavg").read_text().split()[:3]
        lat = table.latency_ms({n: table.session(p) for n, p, _ in rows_in}, teacher.window, rounds=args.rounds)
        repeats.append({"loadavg_before": before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
                        "ms_b32": {n: v[32] for n, v in lat.items()},
                        "faster_x_b32": {n: lat["cnn"][32] / v[32] for n, v in lat.items()},
                        "faster_x_b1": {n: lat["cnn"][1] / v[1] for n, v in lat.items()}})
        log.info("latency repeat %d/%d: %s", i + 1, args.latency_repeats,
                 {k: round(v, 2) for k, v in repeats[-1]["faster_x_b32"].items() if k.endswith("+int8")})
    by = {r["stage"]: r for r in rows}
    base = by["cnn"]

    def against_teacher(r: dict[str, Any]) -> dict[str, Any]:
        out = {"smaller_x": base["onnx_bytes"] / r["onnx_bytes"], "faster_x_b1": base["ms_b1"] / r["ms_b1"],
               "faster_x_b32": base["ms_b32"] / r["ms_b32"],
               "faster_x_b32_repeats": [rep["faster_x_b32"][r["stage"]] for rep in repeats],
               "drop_time_pts": 100 * (base["acc_time"] - r["acc_time"]),
               "drop_load3_pts": 100 * (base["acc_load3"] - r["acc_load3"]),
               "drop_snr0_pts": 100 * (base["acc_snr0"] - r["acc_snr0"])}
        out["met"] = {"smaller_10x": out["smaller_x"] >= 10, "faster_3x_b32": out["faster_x_b32"] >= 3,
                      "time_0.5pt": out["drop_time_pts"] <= 0.5 + 1e-9, "snr0_1pt": out["drop_snr0_pts"] <= 1 + 1e-9}
        return out

    targets: dict[str, Any] = {"candidates": {r["stage"]: against_teacher(r) for r in rows
                                              if r["stage"].endswith("+int8") and not r["stage"].startswith("datafree")}}
    if datafree:
        gaps = {}
        for ref in [r for r in ("cnn+slim+merge+kd+int8", "cnn+slim+merge+nkd+int8") if r in by]:
            for r in rows:
                if r["stage"].startswith("datafree") and r["stage"].endswith("+int8"):
                    gaps[f"{r['stage']} vs {ref}"] = {k: 100 * (by[ref][k] - r[k]) for k in tests}
        targets["datafree_gaps_pts"] = gaps
    extra = {"targets": targets, "target_recipe": {"recipe": TARGET_RECIPE[0], **TARGET_RECIPE[1]},
             "latency_repeats": repeats, "clock": clock, "loadavg": load, "options": vars(o),
             "widths": {k: arch.arch_kwargs(v[-2].net)["widths"] + [arch.arch_kwargs(v[-2].net)["hidden"]]
                        for k, v in paths.items()},
             "what_data_free_saw": saw, "test_windows": {k: len(v[1]) for k, v in tests.items()},
             "trained_on": TRAINED_ON, "onnxruntime": table.ort.__version__, "cpu": cpu_name(),
             "cpu_threads_latency": 1}
    # a dfnkdt-only run gets its own files: the targets run's stay as they were measured
    files = table.write(rows, args.out, "compression_targets" if set(only) & {"dfnkd", "target"}
                        else "compression_inherit" if "inherit" in only
                        else f"compression_dfnoise{args.nkdt_per_class // 24}{''.join(v.removeprefix('dfnkdt4') for v in variants)}"
                        if variant_only
                        else f"compression_dfnoise{args.nkdt_per_class // 24}" if "dfnkdt4" in only
                        else "compression_dfnoise", ref="cnn", extra=extra)
    if args.zoo:
        row = by[row_of["inherit"]]
        files += write_zoo(paths["inherit"], row, base, targets["candidates"][row["stage"]], tests, args)
    print(table.markdown(rows, "cnn"))
    print(json.dumps({k: extra[k] for k in ("targets", "clock", "loadavg", "widths", "what_data_free_saw")},
                     indent=2, default=str))
    print("wrote", *files, file=sys.stderr)
    return 0


def write_zoo(stages: list[pipeline.Stage], row: dict[str, Any], base: dict[str, Any], against: dict[str, Any],
              tests: dict[str, Any], args: argparse.Namespace) -> list[Path]:
    """``--zoo``: the inherit path's INT8 model as ``models/zoo/cnn_small.onnx``, its metrics of this run
    (``row``, and ``against`` its teacher ``base``) in the contract metadata, and the model card beside it."""
    int8 = stages[-1]
    zoo = Path(__file__).resolve().parents[1] / "models" / "zoo" / "cnn_small.onnx"
    proto = copy.deepcopy(int8.proto)
    m = onnxio.read_meta(proto)
    m["edgevib.metrics"] = json.dumps({k: round(row[k], 4) for k in tests} | {"onnx_bytes": row["onnx_bytes"]})
    onnxio.save(proto, m, zoo)
    command = f"python benchmarks/compression_table.py --data ../shared/cwru --out {args.out} --only inherit --zoo"
    zoo.with_suffix(".md").write_text(model_card(row, base, against, m, arch.arch_kwargs(stages[-2].net), command,
                                                 args.out))
    return [zoo, zoo.with_suffix(".md")]


def model_card(final: dict[str, Any], base: dict[str, Any], targets: dict[str, Any], meta: dict[str, str],
               shape: dict[str, Any], command: str, out: str) -> str:
    """The model card written beside ``cnn_small.onnx`` (numbers from this run)."""
    pct = {k: f"{100 * final[k]:.1f} %" for k in ("acc_time", "acc_load3", "acc_snr0", "acc_snr-4")}
    recipe = ", ".join(f"{k}={v}" for k, v in INHERIT_RECIPE[1].items())
    return f"""# cnn_small.onnx: compressed WDCNN (`{meta['edgevib.arch']}`)

Written by `{command}`;
see `docs/compression.md` for the methods and `{out}/compression_inherit.md` for the run beside its teacher.

- Recipe: `{INHERIT_RECIPE[0]}` with {recipe}:
  the teacher's own top-|gamma| channels kept to fixed widths (no sparsity training), neuron merging,
  distillation on real training windows, static INT8. The same recipe met the leave-one-rig-out
  target (`docs/compression_loro_inherit*.md`).

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
- Limits: CWRU drive-end only (one rig); accuracy against the teacher:
  {-targets['drop_time_pts']:+.1f} points on the time split and {-targets['drop_snr0_pts']:+.1f} at SNR 0 dB.
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
    ap.add_argument("--zoo", action="store_true",
                    help="with --only inherit: also write models/zoo/cnn_small.onnx (that recipe's INT8 model) and its card")
    ap.add_argument("--opt", action="append", default=[], metavar="K=V", help="pipeline.Options override")
    ap.add_argument("--skip", default="", help="comma list of extra paths to skip: align16,align8,nkd,align8nkd")
    ap.add_argument("--bearings", default=None, help="../shared/bearings: also measure the shipped fault-type model")
    ap.add_argument("--cwru-all", default=None, help="CWRU folder for the leave-one-rig-out row (default --data)")
    ap.add_argument("--faulttype-only", action="store_true",
                    help="only the shipped fault-type model's row (needs --bearings): write faulttype.json under --out")
    ap.add_argument("--probe-only", action="store_true",
                    help="only the SIMD-alignment latency probe: write align_probe.json under --out")
    ap.add_argument("--only", default="",
                    help="comma list: run only these new rows beside the teacher: wgroup,integral,scalpel "
                    "(writes compression_wgroup.{md,json,png} under --out) or dfnkd,target "
                    "(compression_targets.{md,json,png}) or dfnkdt (compression_dfnoise.{md,json,png}) or dfnkdt4 "
                    "(compression_dfnoise<N // 24>.{md,json,png}) or dfnkdt4fm / dfnkdt4inh / dfnkdt4fw / dfnkdt4fwk alone "
                    "(compression_dfnoise<N // 24><fm|inh|fw|fwk>.*) or inherit (compression_inherit.*)")
    ap.add_argument("--nkdt-per-class", type=int, default=96,
                    help="--only dfnkdt4: synthetic windows per class of the larger noisy-teacher path "
                    "(writes compression_dfnoise<N // 24>.*)")
    ap.add_argument("--latency-repeats", type=int, default=3,
                    help="--only dfnkd,target: extra latency measurements of the same files (speed-ratio spread)")
    ap.add_argument("--wgroup-ratio", default="0.6",
                    help="fraction(s) of aligned weight groups removed per layer, comma list (integral: the first)")
    ap.add_argument("--act-quantile", default="0.3",
                    help="integral: activation threshold = this quantile of each layer's positive activations "
                    "(comma list: one row each)")
    ap.add_argument("--act-l1", type=float, default=0.05, help="integral: L1 weight on the mean post-ReLU activation")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.faulttype_only:
        if not args.bearings:
            ap.error("--faulttype-only needs --bearings DIR")
        ft = faulttype_row(args.cwru_all or args.data, args.bearings, args.rounds)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "faulttype.json").write_text(json.dumps(ft, indent=2) + "\n")
        print(json.dumps(ft, indent=2))
        return 0
    if args.probe_only:
        probe = align_probe(max(args.rounds, 40))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "align_probe.json").write_text(json.dumps(probe, indent=2) + "\n")
        for k, v in probe.items():
            print(f"{k:40s} b1 {v['ms_b1']:.4f} b32 {v['ms_b32']:.4f} ms/window")
        return 0
    opts: dict[str, Any] = pipeline.parse_options(args.opt)
    if args.zoo and "inherit" not in args.only.split(","):
        ap.error("--zoo writes the model of the inherit recipe: add --only inherit")
    if args.only:
        only = [k for k in args.only.split(",") if k]
        if set(only) & TARGET_ROWS:
            return target_rows(args, opts, only)
        return wgroup_rows(args, opts, only)
    clock: dict[str, float] = {}
    t = time.monotonic()
    sp, teacher, meta = data_and_teacher(args)
    clock["data+teacher_s"] = time.monotonic() - t

    t = time.monotonic()
    real = pipeline.run(teacher, "slim,merge,kd,int8,dfq", train=sp.train, meta=meta, seed=args.seed, **opts)
    real_dfq = real.pop()  # the kd student through DFQ instead of calibrated INT8
    clock["real_path_s"] = time.monotonic() - t
    o = pipeline.Options(**opts)
    # neuron merging without sparsity training: prune the plain teacher by |gamma|
    keep = slimming.global_keep(teacher.net, o.demo_ratio)
    plain_pruned = slimming.prune(teacher.net, keep)
    plain_merged, plain_rep = merging.merge_prune(teacher.net, keep, threshold=o.merge_threshold)
    # the data-free paths prune as many channels as the real one, so they compare like for like
    n_all = sum(u.bn.num_features for u in slimming.units(teacher.net))
    n_kept = sum(u.bn.num_features for u in slimming.units(real[-2].net))
    free_opts = {**opts, "prune_ratio": 1 - n_kept / n_all}
    t = time.monotonic()
    free = pipeline.run(teacher, "slim,merge,kd,int8,dfq", data_free=True, meta=meta, seed=args.seed, **free_opts)
    clock["datafree_path_s"] = time.monotonic() - t
    t = time.monotonic()
    keg = pipeline.run(teacher, "slim,merge,kd,int8", data_free=True, meta=meta, seed=args.seed,
                       **{**free_opts, "synth": "kegnet"})
    clock["kegnet_path_s"] = time.monotonic() - t
    extra_paths: dict[str, list[pipeline.Stage]] = {}
    for key, recipe, more in (("align16", "slim,align,merge,kd,int8", {"align": 16}),
                              ("align8", "slim,align,merge,kd,int8", {"align": 8}),
                              ("nkd", "slim,merge,nkd,int8", {}),
                              ("align8nkd", "slim,align,merge,nkd,int8", {"align": 8})):
        if key not in args.skip.split(","):
            t = time.monotonic()
            extra_paths[key] = pipeline.run(teacher, recipe, train=sp.train, meta=meta, seed=args.seed,
                                            **{**opts, **more})
            clock[f"{key}_path_s"] = time.monotonic() - t
    t = time.monotonic()
    # DFQ / ZAQ of the teacher itself: no window at all; per-tensor int8 is where equalisation matters
    quant: list[tuple[str, Any, int]] = []
    for per_channel, tag in ((True, ""), (False, "(per-tensor)")):
        st = pipeline.run(teacher, "dfq,zaq", data_free=True, meta=meta, seed=args.seed,
                          **{**opts, "dfq_per_channel": per_channel})
        quant += [(s.name + tag, s.proto, arch.n_params(teacher.net)) for s in st[1:]]
        cfg = dfq.DFQConfig(per_channel=per_channel, cle_iters=0, absorb=False, bias_correct=False)
        net0, st0 = dfq.dfq(teacher.net, cfg)
        quant.append(("cnn+int8(no calibration, no CLE/bias corr.)" + tag,
                      dfq.quantize_data_free(pipeline._onnx(net0, teacher, meta, "cnn"), net0, st0, cfg),
                      arch.n_params(teacher.net)))
    quant.append(("cnn+int8(real calibration)", quantize.quantize_int8_static(real[0].proto, real_calib(sp, o)),
                  arch.n_params(teacher.net)))
    quant.append(("cnn+int8(real calibration)(per-tensor)",
                  quantize.quantize_int8_static(real[0].proto, real_calib(sp, o), per_channel=False),
                  arch.n_params(teacher.net)))
    clock["dfq_zaq_s"] = time.monotonic() - t

    def onnx_of(net: Any, name: str) -> Any:
        return pipeline._onnx(net, teacher, meta, name)

    kd = real[-2]
    rows_in = [(s.name, s.proto, arch.n_params(s.net)) for s in real]
    rows_in.append((kd.name + "+int8dyn", quantize.quantize_int8_dynamic(kd.proto), arch.n_params(kd.net)))
    rows_in.append((real_dfq.name, real_dfq.proto, arch.n_params(real_dfq.net)))
    rows_in += [("cnn-pruned(no sparsity)", onnx_of(plain_pruned, "p"), arch.n_params(plain_pruned)),
                ("cnn-pruned(no sparsity)+merge", onnx_of(plain_merged, "m"), arch.n_params(plain_merged))]
    rows_in += quant
    seen = {name for name, _, _ in rows_in}
    for key, stages in extra_paths.items():
        n_align = "".join(c for c in key if c.isdigit())
        for s in stages[1:]:
            name = s.name.replace("+align", f"+align{n_align}")
            if "(pruned)" not in name and name not in seen:  # the merge stage repeats the real path's
                rows_in.append((name, s.proto, arch.n_params(s.net)))
                seen.add(name)
    rows_in += [("datafree:" + s.name, s.proto, arch.n_params(s.net)) for s in free[1:]]
    rows_in += [("datafree-kegnet:" + s.name, s.proto, arch.n_params(s.net)) for s in keg[1:]]
    tests = test_sets(sp, args.seed)
    t = time.monotonic()
    rows = table.measure(rows_in, tests, window=teacher.window, rounds=args.rounds)
    clock["measure_s"] = time.monotonic() - t
    by = {r["stage"]: r for r in rows}
    base, final, fdf = by["cnn"], by[real[-1].name], by["datafree:" + free[-2].name]
    pr, mg = by["cnn+slim(pruned)"], by["cnn+slim+merge"]
    ppr, pmg = by["cnn-pruned(no sparsity)"], by["cnn-pruned(no sparsity)+merge"]

    def recovered(pruned: dict[str, Any], merged: dict[str, Any]) -> float | None:
        lost = base["acc_time"] - pruned["acc_time"]
        return None if lost <= 0 else (merged["acc_time"] - pruned["acc_time"]) / lost

    def against_teacher(r: dict[str, Any]) -> dict[str, float]:
        return {"smaller_x": base["onnx_bytes"] / r["onnx_bytes"], "faster_x_b1": base["ms_b1"] / r["ms_b1"],
                "faster_x_b32": base["ms_b32"] / r["ms_b32"],
                "drop_time_pts": 100 * (base["acc_time"] - r["acc_time"]),
                "drop_load3_pts": 100 * (base["acc_load3"] - r["acc_load3"]),
                "drop_snr0_pts": 100 * (base["acc_snr0"] - r["acc_snr0"])}

    targets = {
        **against_teacher(final),
        "merge_recovered_slim": recovered(pr, mg), "merge_recovered_plain": recovered(ppr, pmg),
        "datafree_gap_time_pts": 100 * (final["acc_time"] - fdf["acc_time"]),
        "datafree_gap_snr0_pts": 100 * (final["acc_snr0"] - fdf["acc_snr0"]),
        "candidates": {r["stage"]: against_teacher(r) for r in rows
                       if r["stage"].endswith(("+int8", "+dfq", "+zaq")) and r["stage"] != "cnn"},
        "datafree_gaps_time_pts": {r["stage"]: 100 * (final["acc_time"] - r["acc_time"]) for r in rows
                                   if r["stage"].startswith("datafree") and r["stage"].endswith(("+int8", "+dfq"))},
        "datafree_gaps_snr0_pts": {r["stage"]: 100 * (final["acc_snr0"] - r["acc_snr0"]) for r in rows
                                   if r["stage"].startswith("datafree") and r["stage"].endswith(("+int8", "+dfq"))},
    }
    extra = {"targets": targets, "clock": clock, "options": vars(o), "datafree_options": free_opts,
             "trained_on": TRAINED_ON,
             "merge_slim": real[2].info, "merge_plain": [vars(r) for r in plain_rep],
             "widths_final": arch.arch_kwargs(kd.net), "test_windows": {k: len(v[1]) for k, v in tests.items()},
             "widths": {k: arch.arch_kwargs(v[-2].net)["widths"] + [arch.arch_kwargs(v[-2].net)["hidden"]]
                        for k, v in {"real": real, "datafree": free[:-1], "kegnet": keg, **extra_paths}.items()},
             "what_data_free_saw": {
                 "datafree (DeepInversion)": "teacher weights + BN statistics; windows synthesised from them",
                 "datafree-kegnet": "teacher weights and outputs on generated windows (no BN statistics)",
                 "dfq": "weights and BN statistics only (no window of any kind)",
                 "zaq": "weights, BN statistics, teacher/INT8-copy outputs on generated windows"},
             "cpu_threads_latency": 1, "onnxruntime": table.ort.__version__,
             "cpu": cpu_name()}
    t = time.monotonic()
    extra["align_probe"] = align_probe(args.rounds)
    clock["align_probe_s"] = time.monotonic() - t
    if args.bearings:
        t = time.monotonic()
        extra["faulttype"] = faulttype_row(args.cwru_all or args.data, args.bearings, args.rounds)
        clock["faulttype_s"] = time.monotonic() - t
    files = table.write(rows, args.out, "compression_table", ref="cnn", extra=extra)
    print(table.markdown(rows, "cnn"))
    print(json.dumps({"targets": targets, "clock": clock, "faulttype": extra.get("faulttype")}, indent=2))
    print("wrote", *files, file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
