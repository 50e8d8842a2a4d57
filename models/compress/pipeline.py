"""``compress``: teacher checkpoint in, compressed ONNX (same contract) out.

Recipe steps, in this order: ``slim`` (L1-on-gamma sparsity training, global threshold,
physical pruning), ``align`` (Scalpel: kept channel counts rounded to a multiple of the CPU's
SIMD width, ``Options.align``; ``Options.align_first`` for the first conv alone), ``merge`` (neuron merging at the prune, no data), ``kd``
(distil from the teacher; without it a pruned model is fine-tuned on labels) or ``nkd``
(distillation with white-noise augmentation of the student's input: noise-robust; with
``Options.noise_teacher`` the teacher's targets come from the same noisy copy), ``int8``
(static QDQ INT8, calibrated on windows), ``dfq`` (data-free quantization: cross-layer
equalisation, high-bias absorption, bias correction, INT8 ranges from BN statistics; no
windows at all), ``zaq`` (zero-shot adversarial quantization: INT8-aware fine-tuning on
generator windows, then ``dfq``'s export).
With ``data_free`` every step that needs windows uses windows synthesised from the teacher
(``Options.synth``: ``deepinversion`` (:mod:`.datafree`) or ``kegnet`` (:mod:`.kegnet`)):
sparsity training and fine-tuning become distillation on them, and they calibrate INT8; with
``nkd`` the white noise goes on the student's copy of those synthetic windows (no real window
anywhere: each data-free stage's ``info["saw"]`` says what it used).
``slim`` with ``Options.sparse_steps = 0`` skips sparsity training and prunes the teacher's own
channels, to fixed widths with ``keep_width`` / ``keep_hidden``: on three rigs' data that is what
kept students matching their teachers (99.3-99.7 % of training-rig windows against 83-97 %
after sparsity training; docs/compression.md, leave-one-rig-out).
:func:`run` returns every intermediate stage for the table.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import onnxio
from edgevib.models.compress.errors import CompressError

from edgevib.errors import EdgevibError
from edgevib.extras import require
from edgevib.progress import Progress, null_progress

log = logging.getLogger(__name__)
_COMP = "models.compress.pipeline"
STEPS = ("slim", "align", "merge", "kd", "nkd", "int8", "dfq", "zaq")
WINDOW_STEPS = {"slim", "kd", "nkd", "int8"}  # steps that train or calibrate on windows
SYNTH = ("deepinversion", "kegnet")


@dataclass(frozen=True)
class Options:
    """Knobs of the pipeline; defaults chosen on CWRU to run in minutes on 2 CPU cores."""

    prune_ratio: float | None = None  # fraction of BN channels removed; None: those slimming zeroed
    sparse_lam: float = 0.7  # proximal L1 on gamma, relative to Adam's step (must be < 1)
    sparse_gamma_lr: float = 1e-2
    sparse_steps: int = 600  # 0: no sparsity training; slim ranks the teacher's own gammas (needs keep_width or prune_ratio)
    keep_width: int = 0  # slim: keep this many channels of every conv layer by |gamma| (0: by threshold/prune_ratio)
    keep_hidden: int = 0  # slim, with keep_width: channels kept of the dense hidden layer (0: all)
    demo_ratio: float = 0.1  # benchmark only: pruning of the plain teacher, with/without merging
    kd_steps: int = 1500
    kd_lr: float = 2e-3
    temperature: float = 4.0
    alpha: float = 0.7
    kd_mixup: float = 0.0  # kd: Beta(a, a) mixes of two windows for teacher and student (function matching); needs alpha=1
    lr: float = 1e-3
    merge_threshold: float = 0.3
    calib_windows: int = 256
    synth_per_class: int = 24
    synth_steps: int = 300
    synth_lr: float = 0.1
    synth_bn_weight: float = 0.3
    synth: str = "deepinversion"  # data-free window source: deepinversion | kegnet
    kegnet_steps: int = 300  # per generator (2 generators)
    align: int = 16  # Scalpel: channel counts a multiple of this (AVX-512: 16 float32 lanes)
    align_first: int = 0  # align: multiple for the wide first conv only (0: ``align``); its width sets
    # most of a small student's INT8 time (64 taps x 128 positions per channel)
    noise_p: float = 0.5  # nkd: fraction of student windows given white noise
    noise_snr_lo: float = -6.0  # nkd: SNR drawn uniformly in [lo, hi] dB
    noise_snr_hi: float = 10.0
    noise_teacher: bool = False  # nkd: the teacher scores the noisy copy too (targets on noisy windows)
    dfq_per_channel: bool = True
    zaq_steps: int = 300
    seed: int = 0


@dataclass
class Stage:
    """One point of the pipeline: the torch network (None after INT8) and its ONNX proto."""

    name: str
    net: Any
    proto: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``K=V`` overrides of :class:`Options` from a command line, each converted to the field's type
    (``true``/``false`` for flags); an unknown key or a bad value raises :class:`CompressError`.

    >>> parse_options(["kd_steps=6000", "noise_p=0.25", "noise_teacher=true", "synth=kegnet"])
    {'kd_steps': 6000, 'noise_p': 0.25, 'noise_teacher': True, 'synth': 'kegnet'}
    >>> parse_options(["kd_step=6000"])
    Traceback (most recent call last):
    ...
    edgevib.models.compress.errors.CompressError: models.compress.pipeline: option 'kd_step=6000'; fix: give K=V ...
    """
    kinds = {f.name: f.default for f in fields(Options)}
    out: dict[str, Any] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or k not in kinds:
            raise CompressError(_COMP, f"option {pair!r}", f"give K=V with K one of {', '.join(kinds)}")
        default = kinds[k]
        try:
            if isinstance(default, bool):
                if v.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(v)
                out[k] = v.lower() in ("true", "1")
            elif isinstance(default, str):
                out[k] = v
            elif isinstance(default, int):
                out[k] = int(v)
            else:  # float, or None (prune_ratio)
                out[k] = float(v)
        except ValueError:
            kind = ("true or false" if isinstance(default, bool) else "an integer" if isinstance(default, int)
                    else "a number")
            raise CompressError(_COMP, f"option {pair!r}", f"{k} takes {kind}") from None
    return out


def parse_recipe(recipe: str | Sequence[str]) -> list[str]:
    """``"slim,merge,kd,int8"`` or a list -> validated steps in pipeline order."""
    steps = [s.strip() for s in (recipe.split(",") if isinstance(recipe, str) else recipe) if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if (bad or not steps or any(s in steps and "slim" not in steps for s in ("merge", "align"))
            or {"kd", "nkd"} <= set(steps)):
        raise CompressError(_COMP, f"recipe {steps}", f"use some of {','.join(STEPS)} ('merge' and 'align' need "
                            "'slim'; 'kd' and 'nkd' exclude each other)")
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
    if o.synth not in SYNTH:
        raise CompressError(_COMP, f"synth={o.synth!r}", f"use one of {', '.join(SYNTH)}")
    windows = bool(WINDOW_STEPS & set(steps))
    if train is None and not data_free and windows:
        raise CompressError(_COMP, "no training windows and data_free=False",
                            "pass --data DIR (real windows) or --data-free")
    report = progress or null_progress
    meta = meta or onnxio.base_meta(teacher.classes, teacher.fs, teacher.window, teacher.arch)
    arch = meta.get("edgevib.arch", "cnn")
    t_net = copy.deepcopy(teacher.net).eval()
    stages = [Stage(arch, t_net, _onnx(t_net, teacher, meta, arch))]
    batches: Any = None
    calib: Any = None
    n_synth = 0
    if windows and data_free:
        if o.synth == "kegnet":
            from edgevib.models.compress import kegnet

            xs, ys = kegnet.synthesize(t_net, o.synth_per_class, steps=o.kegnet_steps, seed=o.seed, progress=report)
        else:
            xs, ys = datafree.synthesize(t_net, o.synth_per_class, steps=o.synth_steps, lr=o.synth_lr,
                                         bn_weight=o.synth_bn_weight, seed=o.seed, progress=report)
        n_synth = len(xs)
        batches = training.tensor_batches(xs, ys, seed=o.seed)
        calib = xs[np.random.default_rng(o.seed).permutation(len(xs))[:o.calib_windows]]
    elif windows:
        batches = training.window_batches(train, seed=o.seed)
        idx = np.random.default_rng(o.seed).permutation(len(train))[:o.calib_windows]
        calib = train.x3d()[np.sort(idx)]
    net = t_net
    kd_step = next((s for s in ("kd", "nkd") if s in steps), None)
    if "slim" in steps:
        if o.sparse_steps == 0 and not o.keep_width and o.prune_ratio is None:
            raise CompressError(_COMP, "sparse_steps=0 with neither keep_width nor prune_ratio",
                                "without sparsity training nothing is zeroed: set keep_width (e.g. 16) or prune_ratio")
        sparse = copy.deepcopy(t_net) if o.sparse_steps == 0 else slimming.sparse_train(
            copy.deepcopy(t_net), batches, lam=o.sparse_lam, steps=o.sparse_steps, lr=o.lr,
            gamma_lr=o.sparse_gamma_lr, teacher=t_net if data_free else None, seed=o.seed, progress=report)
        if o.keep_width:
            widths = [u.bn.num_features for u in slimming.units(sparse)]
            keep = slimming.top_keep(sparse, [o.keep_width] * (len(widths) - 1) + [o.keep_hidden or widths[-1]])
        else:
            keep = slimming.global_keep(sparse, o.prune_ratio)
        arch += "+slim"
        if "align" in steps:
            multiples = [o.align_first or o.align] + [o.align] * (len(keep) - 1)
            keep = slimming.align_keep(sparse, keep, multiples)
            arch += "+align"
        stages.append(Stage(arch + "(pruned)", slimming.prune(sparse, keep)))
        if "merge" in steps:
            arch += "+merge"
            merged, rep = merging.merge_prune(sparse, keep, threshold=o.merge_threshold)
            stages.append(Stage(arch, merged, info={"merge": [dataclasses.asdict(r) for r in rep]}))
        net = copy.deepcopy(stages[-1].net)
        noise = (o.noise_p, o.noise_snr_lo, o.noise_snr_hi) if kd_step == "nkd" else None
        if kd_step:
            arch += "+" + kd_step + ("(noisy teacher)" if noise and o.noise_teacher else "") \
                + ("(mixup)" if o.kd_mixup > 0 else "")
            # real windows may refresh the BN statistics the prune left stale; synthetic ones may not
            distill.distill(net, t_net, batches, steps=o.kd_steps, temperature=o.temperature,
                            alpha=1.0 if data_free else o.alpha, lr=o.kd_lr, seed=o.seed, bn_stats=not data_free,
                            noise=noise, noisy_teacher=o.noise_teacher, mixup=o.kd_mixup, progress=report)
        elif data_free:
            distill.distill(net, t_net, batches, steps=o.kd_steps, alpha=1.0, lr=o.kd_lr, seed=o.seed,
                            progress=report)
        else:
            distill.finetune(net, batches, steps=o.kd_steps, lr=o.kd_lr, seed=o.seed, progress=report)
        info: dict[str, Any] = {}
        if data_free:  # what a data-free stage was built from (no real window)
            noisy = (f"; white noise on a fraction {o.noise_p:g} of the student's copies at SNR "
                     f"U[{o.noise_snr_lo:g}, {o.noise_snr_hi:g}] dB") if noise else ""
            if noise and o.noise_teacher:
                noisy += ", the teacher's targets from the same noisy copies"
            if kd_step and o.kd_mixup > 0:
                noisy += f"; distilled on mixes of two of them, Beta({o.kd_mixup:g}, {o.kd_mixup:g}) weights"
            src = ("teacher weights + BN statistics" if o.synth == "deepinversion"
                   else "teacher weights and outputs (no BN statistics)")
            used = ("distillation, INT8 calibration; channels kept by the teacher's own |gamma|"
                    if o.sparse_steps == 0 else "sparsity training, distillation, INT8 calibration")
            info["saw"] = f"{src}; {n_synth} {o.synth} windows synthesised from them ({used}){noisy}"
        stages.append(Stage(arch, net, info=info))
    elif kd_step:
        raise CompressError(_COMP, f"recipe {steps}", f"'{kd_step}' needs a smaller student: add 'slim'")
    for s in stages:
        if s.proto is None:
            s.proto = _onnx(s.net, teacher, meta, s.name)
    fp = stages[-1]
    if "int8" in steps:
        proto = quantize.quantize_int8_static(fp.proto, calib)
        stages.append(Stage(onnxio.read_meta(proto)["edgevib.arch"], net, proto))
    if "dfq" in steps or "zaq" in steps:
        from edgevib.models.compress import dfq

        cfg = dfq.DFQConfig(per_channel=o.dfq_per_channel)
        if "dfq" in steps:
            folded, st = dfq.dfq(fp.net, cfg)
            proto = dfq.quantize_data_free(_onnx(folded, teacher, meta, fp.name), folded, st, cfg)
            stages.append(Stage(onnxio.read_meta(proto)["edgevib.arch"], folded, proto,
                                info={"saw": "teacher weights and BN statistics only"}))
        if "zaq" in steps:
            from edgevib.models.compress import zaq

            folded, st, info = zaq.zaq(fp.net, cfg, steps=o.zaq_steps, seed=o.seed, progress=report)
            proto = dfq.quantize_data_free(_onnx(folded, teacher, meta, fp.name), folded, st, cfg)
            onnxio.set_meta(proto, {**onnxio.read_meta(proto), "edgevib.arch": fp.name + "+zaq"})
            stages.append(Stage(fp.name + "+zaq", folded, proto, info=info))
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

    steps = parse_recipe(recipe)
    if (data_dir is not None and data_free) or (data_dir is None and not data_free and WINDOW_STEPS & set(steps)):
        raise CompressError(_COMP, f"data_dir={data_dir}, data_free={data_free}",
                            "give exactly one of --data DIR or --data-free")
    p = Path(model)
    trainer = _trainer(p)
    unsupported = [s for s in steps if s not in trainer.compress]
    if unsupported:
        raise CompressError(_COMP, f"recipe step(s) {','.join(unsupported)} for a {trainer.name} model {p.name!r}",
                            f"a {trainer.name} model takes {','.join(trainer.compress) or 'no compression step'} "
                            "(models.arch registry)")
    if p.suffix == ".onnx":
        if steps != ["int8"]:
            raise CompressError(_COMP, f"recipe {steps} on ONNX model {p.name!r}",
                                "slim/merge/kd/dfq/zaq need the torch checkpoint (.pt); on an ONNX model use --recipe int8")
        return _int8_only(p, data_dir, out)
    teacher, meta = trainer.load_checkpoint(p)
    if not isinstance(teacher, CNNModel):
        raise CompressError(_COMP, f"{p.name!r} loads as {type(teacher).__name__}",
                            "the layer steps (slim, merge, kd, dfq, zaq) take a WDCNN (models.cnn) checkpoint")
    train = training_windows(data_dir, teacher.classes, teacher.window) if data_dir is not None else None
    stages = run(teacher, steps, train=train, data_free=data_free, meta=meta or None, progress=progress, **opts)
    final = stages[-1]
    return onnxio.save(final.proto, onnxio.read_meta(final.proto), out)


def _trainer(p: Path) -> Any:
    """The registered trainer (:mod:`edgevib.models.arch`) of model file ``p``, from its own metadata."""
    from edgevib.models import arch

    if not p.is_file():
        raise CompressError(_COMP, f"model {str(p)!r} not found", "pass a .pt checkpoint or an .onnx model")
    if p.suffix == ".onnx":
        name = onnxio.read_meta(p).get("edgevib.arch", "")
        if not name:
            raise CompressError(_COMP, f"{p.name!r} has no edgevib.arch metadata",
                                "pass a model built by edgevib (see docs/model-contract.md)")
    else:
        torch = require("torch", extra="train", feature="model compression")
        try:
            ck = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a foreign file
            raise CompressError(_COMP, f"{p.name!r} is not a readable torch checkpoint ({exc})",
                                "pass a .pt written by edgevib.models.compress.arch.save_checkpoint") from exc
        # checkpoints carry the trainer's name; those older than the registry were all WDCNNs
        name = str(ck.get("model_arch", "cnn")) if isinstance(ck, dict) else "cnn"
    try:
        return arch.of_model(name)
    except EdgevibError as exc:
        raise CompressError(_COMP, f"{p.name!r} comes from arch {name!r}, which no trainer registers",
                            f"compress a model of a registered arch ({', '.join(arch.names())})") from exc


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
