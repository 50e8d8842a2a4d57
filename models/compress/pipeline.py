"""``compress``: teacher checkpoint in, compressed ONNX (same contract) out.

Recipe steps, in this order: ``slim`` (L1-on-gamma sparsity training, global threshold,
physical pruning), ``merge`` (neuron merging at the prune, no data), ``kd`` (distil from the
teacher; without it a pruned model is fine-tuned on labels), ``int8`` (static QDQ INT8).
With ``data_free`` every step that needs windows uses windows synthesised from the teacher
(:mod:`.datafree`): sparsity training and fine-tuning become distillation on them, and they
calibrate INT8. :func:`run` returns every intermediate stage for the table.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import onnxio
from edgevib.models.compress.arch import load_checkpoint
from edgevib.models.compress.errors import CompressError

from edgevib.progress import Progress, null_progress

log = logging.getLogger(__name__)
_COMP = "models.compress.pipeline"
STEPS = ("slim", "merge", "kd", "int8")


@dataclass(frozen=True)
class Options:
    """Knobs of the pipeline; defaults chosen on CWRU to run in minutes on 2 CPU cores."""

    prune_ratio: float | None = None  # fraction of BN channels removed; None: those slimming zeroed
    sparse_lam: float = 0.7  # proximal L1 on gamma, relative to Adam's step (must be < 1)
    sparse_gamma_lr: float = 1e-2
    sparse_steps: int = 600
    demo_ratio: float = 0.1  # benchmark only: pruning of the plain teacher, with/without merging
    kd_steps: int = 1500
    kd_lr: float = 2e-3
    temperature: float = 4.0
    alpha: float = 0.7
    lr: float = 1e-3
    merge_threshold: float = 0.3
    calib_windows: int = 256
    synth_per_class: int = 24
    synth_steps: int = 300
    synth_lr: float = 0.1
    synth_bn_weight: float = 0.3
    seed: int = 0


@dataclass
class Stage:
    """One point of the pipeline: the torch network (None after INT8) and its ONNX proto."""

    name: str
    net: Any
    proto: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def parse_recipe(recipe: str | Sequence[str]) -> list[str]:
    """``"slim,merge,kd,int8"`` or a list -> validated steps in pipeline order."""
    steps = [s.strip() for s in (recipe.split(",") if isinstance(recipe, str) else recipe) if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps or ("merge" in steps and "slim" not in steps):
        raise CompressError(_COMP, f"recipe {steps}", f"use some of {','.join(STEPS)} ('merge' needs 'slim')")
    return [s for s in STEPS if s in steps]


def _onnx(net: Any, teacher: CNNModel, meta: dict[str, str], arch: str) -> Any:
    proto = onnxio.compact(CNNModel(net, teacher.classes, teacher.fs).to_onnx())
    return onnxio.set_meta(proto, {**meta, "edgevib.arch": arch})


def run(teacher: CNNModel, recipe: str | Sequence[str], *, train: Any = None, data_free: bool = False,
        meta: dict[str, str] | None = None, progress: Progress | None = None, **opts: Any) -> list[Stage]:
    """Apply ``recipe`` to ``teacher``; returns the stages (teacher first, final last)."""
    from edgevib.models.compress import datafree, distill, merging, quantize, slimming, training

    try:
        o = dataclasses.replace(Options(), **opts)
    except TypeError as exc:
        raise CompressError(_COMP, str(exc), f"use options among {sorted(Options.__dataclass_fields__)}") from exc
    steps = parse_recipe(recipe)
    if train is None and not data_free:
        raise CompressError(_COMP, "no training windows and data_free=False",
                            "pass --data DIR (real windows) or --data-free")
    report = progress or null_progress
    meta = meta or onnxio.base_meta(teacher.classes, teacher.fs, teacher.window, teacher.arch)
    arch = meta.get("edgevib.arch", "cnn")
    t_net = copy.deepcopy(teacher.net).eval()
    stages = [Stage(arch, t_net, _onnx(t_net, teacher, meta, arch))]
    if data_free:
        xs, ys = datafree.synthesize(t_net, o.synth_per_class, steps=o.synth_steps, lr=o.synth_lr,
                                     bn_weight=o.synth_bn_weight, seed=o.seed, progress=report)
        batches = training.tensor_batches(xs, ys, seed=o.seed)
        calib = xs[np.random.default_rng(o.seed).permutation(len(xs))[:o.calib_windows]]
    else:
        batches = training.window_batches(train, seed=o.seed)
        idx = np.random.default_rng(o.seed).permutation(len(train))[:o.calib_windows]
        calib = train.x3d()[np.sort(idx)]
    net = t_net
    if "slim" in steps:
        sparse = slimming.sparse_train(copy.deepcopy(t_net), batches, lam=o.sparse_lam, steps=o.sparse_steps,
                                       lr=o.lr, gamma_lr=o.sparse_gamma_lr, teacher=t_net if data_free else None, seed=o.seed, progress=report)
        keep = slimming.global_keep(sparse, o.prune_ratio)
        arch += "+slim"
        stages.append(Stage(arch + "(pruned)", slimming.prune(sparse, keep)))
        if "merge" in steps:
            arch += "+merge"
            merged, rep = merging.merge_prune(sparse, keep, threshold=o.merge_threshold)
            stages.append(Stage(arch, merged, info={"merge": [dataclasses.asdict(r) for r in rep]}))
        net = copy.deepcopy(stages[-1].net)
        if "kd" in steps:
            arch += "+kd"
            # real windows may refresh the BN statistics the prune left stale; synthetic ones may not
            distill.distill(net, t_net, batches, steps=o.kd_steps, temperature=o.temperature,
                            alpha=1.0 if data_free else o.alpha, lr=o.kd_lr, seed=o.seed, bn_stats=not data_free,
                            progress=report)
        elif data_free:
            distill.distill(net, t_net, batches, steps=o.kd_steps, alpha=1.0, lr=o.kd_lr, seed=o.seed,
                            progress=report)
        else:
            distill.finetune(net, batches, steps=o.kd_steps, lr=o.kd_lr, seed=o.seed, progress=report)
        stages.append(Stage(arch, net))
    elif "kd" in steps:
        raise CompressError(_COMP, f"recipe {steps}", "'kd' needs a smaller student: add 'slim'")
    for s in stages:
        if s.proto is None:
            s.proto = _onnx(s.net, teacher, meta, s.name)
    if "int8" in steps:
        proto = quantize.quantize_int8_static(stages[-1].proto, calib)
        stages.append(Stage(onnxio.read_meta(proto)["edgevib.arch"], net, proto))
    if data_free:
        for s in stages[1:]:
            onnxio.set_meta(s.proto, {**onnxio.read_meta(s.proto), "edgevib.trained_on":
                                      f"{meta.get('edgevib.trained_on', '')} (compressed data-free)".strip()})
    return stages


def compress(model: str | Path, recipe: str | Sequence[str] = STEPS, *, data_dir: str | Path | None = None,
             data_free: bool = False, out: str | Path = "model_small.onnx", progress: Progress | None = None,
             **opts: Any) -> Path:
    """Compress a ``.pt`` checkpoint (or, for ``int8`` alone, an ``.onnx`` model); write ``out``."""
    from edgevib.models.compress.data import training_windows

    if (data_dir is None) == (not data_free):
        raise CompressError(_COMP, f"data_dir={data_dir}, data_free={data_free}",
                            "give exactly one of --data DIR or --data-free")
    steps = parse_recipe(recipe)
    p = Path(model)
    if p.suffix == ".onnx":
        if steps != ["int8"]:
            raise CompressError(_COMP, f"recipe {steps} on ONNX model {p.name!r}",
                                "slim/merge/kd need the torch checkpoint (.pt); on an ONNX model use --recipe int8")
        return _int8_only(p, data_dir, out)
    teacher, meta = load_checkpoint(p)
    train = training_windows(data_dir, teacher.classes, teacher.window) if data_dir is not None else None
    stages = run(teacher, steps, train=train, data_free=data_free, meta=meta or None, progress=progress, **opts)
    final = stages[-1]
    return onnxio.save(final.proto, onnxio.read_meta(final.proto), out)


def _int8_only(p: Path, data_dir: str | Path | None, out: str | Path) -> Path:
    """Static INT8 of an ONNX model; calibration windows from ``data_dir`` (real data only)."""
    from edgevib.models.compress import quantize
    from edgevib.models.compress.data import training_windows

    if data_dir is None:
        raise CompressError(_COMP, f"--data-free on ONNX model {p.name!r}",
                            "data-free synthesis needs the teacher's BN statistics: pass the .pt checkpoint")
    meta = onnxio.read_meta(p)
    import json

    classes = tuple(json.loads(meta.get("edgevib.classes", "[]")))
    train = training_windows(data_dir, classes, int(meta.get("edgevib.window", 2048)))
    idx = np.random.default_rng(0).permutation(len(train))[:Options().calib_windows]
    proto = quantize.quantize_int8_static(p, train.x3d()[np.sort(idx)])
    return onnxio.save(proto, onnxio.read_meta(proto), out)
