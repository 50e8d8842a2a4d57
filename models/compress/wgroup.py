"""Scalpel SIMD-group weight pruning and integral pruning (weights and activations) for the WDCNN.

Scalpel (Yu et al., ISCA 2017) for low-parallelism hardware (one CPU core with SIMD): every
conv/dense weight is seen as the GEMM it becomes (``[out, in * kernel]``, the im2col
reduction order ``c * kernel + k`` that ONNX Runtime's NCHW convolution uses) and cut along
the reduction dimension into groups of ``width`` consecutive weights starting at multiples
of ``width`` (8 float32 lanes for AVX2, 16 for AVX-512; the last group of a row is shorter
when the row is not a multiple). A group whose RMS is at or below its layer's threshold is
removed (all its weights zero), then the network is retrained with the mask held
(:func:`mask`, :func:`finetune`): a pruned group stays exactly zero. Scalpel's node pruning
for high-parallelism hardware is :func:`slimming.align_keep` (the ``align`` step).

Integral pruning (Yang et al., 2018): weight pruning plus activation sparsity. Every
``BN -> ReLU`` becomes ``relu(bn(x) - theta)`` with a fixed per-layer ``theta`` (a quantile
of the layer's positive activations on training windows, :func:`act_thresholds`), and
fine-tuning adds an L1 penalty on the post-ReLU activations. ``theta`` folds into the BN
shift at export (``beta - theta``; :func:`finish`), so the ONNX graph keeps the teacher's
nodes (Conv+ReLU stay fused in ONNX Runtime); the sparsity is reported as measured zeros.

The thresholds are per layer (a quantile of that layer's group RMS), not one global value:
layers differ in weight scale (the CWRU teacher: RMS 0.05-0.10 per layer), and one global
RMS threshold would prune the layers with small weights far harder. Neither method changes a tensor's shape: the dense ONNX Runtime CPU
kernels do the same work on the zeros (see docs/compression.md for what was measured).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from edgevib.models.compress.distill import kd_loss
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import BatchFn, fit

from edgevib.extras import require
from edgevib.progress import Progress

torch: Any = require("torch", extra="train", feature="weight-group pruning")
nn: Any = torch.nn
prune: Any = require("torch.nn.utils.prune", extra="train", feature="weight-group pruning")
log = logging.getLogger(__name__)
_COMP = "models.compress.wgroup"


def layers(net: Any) -> list[tuple[str, Any]]:
    """The WDCNN's prunable weight layers in forward order: every conv, the hidden and output
    dense layers (the envelope branch, if any, is left dense)."""
    out = [(f"blocks.{i}.0", b[0]) for i, b in enumerate(net.blocks)]
    out += [(f"head.{i}", m) for i, m in enumerate(net.head) if isinstance(m, nn.Linear)]
    return out


def _rows(w: Any) -> Any:
    return w.detach().reshape(w.shape[0], -1)


def group_rms(w: Any, width: int) -> np.ndarray:
    """RMS of every aligned group of ``width`` weights along the GEMM reduction dimension of
    ``w`` (``[out, in]`` or ``[out, in, k]``): ``[out, ceil(in * k / width)]``."""
    if width < 1:
        raise CompressError(_COMP, f"group width={width}", "use the SIMD width in float32 lanes, e.g. 8 or 16")
    r = _rows(w).numpy().astype(np.float64)
    n = r.shape[1]
    g = -(-n // width)
    pad = np.zeros((r.shape[0], g * width))
    pad[:, :n] = r
    count = np.minimum(width, n - np.arange(g) * width)  # the last group may be shorter
    return np.asarray(np.sqrt((pad.reshape(r.shape[0], g, width) ** 2).sum(-1) / count))


def group_masks(net: Any, width: int = 8, ratio: float = 0.5) -> dict[str, Any]:
    """Per layer, a 0/1 mask (the weight's shape) zeroing the ``ratio`` of its aligned groups
    with the smallest RMS (threshold = that layer's ``ratio`` quantile of group RMS)."""
    if not 0 <= ratio < 1:
        raise CompressError(_COMP, f"group prune ratio={ratio}", "use a fraction of groups in [0, 1), e.g. 0.5")
    masks = {}
    for name, m in layers(net):
        rms = group_rms(m.weight, width)
        thr = float(np.quantile(rms, ratio)) if ratio > 0 else -1.0
        keep = np.repeat(rms > thr, width, axis=1)[:, :_rows(m.weight).shape[1]]
        masks[name] = torch.from_numpy(keep.astype(np.float32)).reshape(m.weight.shape)
    return masks


def mask(net: Any, masks: dict[str, Any]) -> Any:
    """Hold ``masks`` on ``net`` in place (``torch.nn.utils.prune``: ``weight = weight_orig * mask``,
    so masked weights stay zero through any training); :func:`finish` makes it permanent."""
    named = dict(layers(net))
    bad = sorted(set(masks) - set(named))
    if bad:
        raise CompressError(_COMP, f"masks for unknown layers {bad}", f"use names among {sorted(named)}")
    for name, mk in masks.items():
        if tuple(mk.shape) != tuple(named[name].weight.shape):
            raise CompressError(_COMP, f"mask {name} of shape {tuple(mk.shape)}",
                                f"use the weight's shape {tuple(named[name].weight.shape)}")
        prune.custom_from_mask(named[name], "weight", mk)
    return net


class ShiftedReLU(nn.Module):
    """``relu(x - theta)``: zero below ``theta``; folds into the preceding BN's shift."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.register_buffer("theta", torch.tensor(float(theta)))

    def forward(self, x: Any) -> Any:
        return torch.relu(x - self.theta)


def _relu_sites(net: Any) -> Iterator[tuple[Any, int, Any]]:
    """(container, index, preceding BN) of every ReLU that follows a BN (conv blocks, head)."""
    for seq in [*net.blocks, net.head]:
        for i in range(1, len(seq)):
            if isinstance(seq[i], (nn.ReLU, ShiftedReLU)) and isinstance(seq[i - 1], nn.BatchNorm1d):
                yield seq, i, seq[i - 1]


def activations(net: Any, x: Any) -> list[Any]:
    """Post-ReLU activations of every BN -> ReLU site for input ``x`` (graph kept: usable in a loss)."""
    acts: list[Any] = []
    hooks = [seq[i].register_forward_hook(lambda _m, _i, out: acts.append(out)) for seq, i, _ in _relu_sites(net)]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    return acts


def act_thresholds(net: Any, x: Any, quantile: float = 0.3) -> list[float]:
    """Per site, the ``quantile`` of its positive activations on windows ``x`` (eval mode)."""
    if not 0 <= quantile < 1:
        raise CompressError(_COMP, f"activation quantile={quantile}", "use a fraction in [0, 1), e.g. 0.3")
    net.eval()
    with torch.no_grad():
        acts = activations(net, x)
    out = []
    for a in acts:
        pos = a[a > 0]
        out.append(float(torch.quantile(pos[:1_000_000], quantile)) if pos.numel() else 0.0)
    return out


def set_thresholds(net: Any, thetas: list[float]) -> Any:
    """Replace every BN -> ReLU site's ReLU by ``ShiftedReLU(theta)`` (in place)."""
    sites = list(_relu_sites(net))
    if len(thetas) != len(sites):
        raise CompressError(_COMP, f"{len(thetas)} thresholds for {len(sites)} ReLU sites", "pass one per site")
    for (seq, i, _), th in zip(sites, thetas, strict=True):
        seq[i] = ShiftedReLU(th)
    return net


def finish(net: Any) -> Any:
    """Make masks permanent (plain ``weight`` tensors holding the zeros) and fold every
    ``ShiftedReLU`` into its BN (``beta -= theta``, ReLU back): an exportable plain WDCNN."""
    for _, m in layers(net):
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    with torch.no_grad():
        for seq, i, bn in list(_relu_sites(net)):
            if isinstance(seq[i], ShiftedReLU):
                bn.bias.sub_(seq[i].theta)
                seq[i] = nn.ReLU()
    return net.eval()


def finetune(student: Any, teacher: Any, batches: BatchFn, *, steps: int = 1500, temperature: float = 4.0,
             alpha: float = 0.7, lr: float = 2e-3, act_l1: float = 0.0, seed: int = 0,
             progress: Progress | None = None) -> Any:
    """Distil ``teacher`` into the masked ``student`` (:func:`mask`) in place, as
    :func:`distill.distill` with real windows (BN statistics updated), plus ``act_l1`` times
    the mean post-ReLU activation of every site (integral pruning; 0: weights only)."""
    if act_l1 < 0:
        raise CompressError(_COMP, f"act_l1={act_l1}", "use a penalty >= 0, e.g. 1e-3")
    teacher.eval()

    def loss(net: Any, x: Any, y: Any) -> Any:
        with torch.no_grad():
            t = teacher(x)
        if act_l1 == 0:
            return kd_loss(net(x), t, y, temperature=temperature, alpha=alpha)
        acts: list[Any] = []
        hooks = [seq[i].register_forward_hook(lambda _m, _i, out: acts.append(out))
                 for seq, i, _ in _relu_sites(net)]
        try:
            out = net(x)
        finally:
            for h in hooks:
                h.remove()
        pen = sum(a.abs().mean() for a in acts) / max(1, len(acts))
        return kd_loss(out, t, y, temperature=temperature, alpha=alpha) + act_l1 * pen

    return fit(student, batches, loss, steps=steps, lr=lr, seed=seed, bn_stats=True, progress=progress,
               label="wgroup-kd" if act_l1 == 0 else "integral-kd")


def weight_report(net: Any, width: int) -> dict[str, Any]:
    """Zero weights and all-zero aligned groups of the prunable layers, and what storing them
    sparsely would take: a group bitmap + the kept groups (float32), or CSR (float32 values,
    int16 column indices, int32 row pointers)."""
    n = z = groups = zgroups = dense = gsparse = csr = 0
    for _, m in layers(net):
        r = _rows(m.weight).numpy()
        nz = int(np.count_nonzero(r))
        rms = group_rms(m.weight, width)
        kept = rms > 0
        n += r.size
        z += r.size - nz
        groups += rms.size
        zgroups += int((~kept).sum())
        dense += 4 * r.size
        lens = np.minimum(width, r.shape[1] - np.arange(rms.shape[1]) * width)
        gsparse += 4 * int((kept * lens[None, :]).sum()) + -(-rms.size // 8)
        csr += 6 * nz + 4 * (r.shape[0] + 1)
    return {"weights": n, "zero_weights": z, "weight_sparsity": z / n if n else 0.0, "groups": groups,
            "zero_groups": zgroups, "group_sparsity": zgroups / groups if groups else 0.0, "dense_bytes": dense,
            "group_sparse_bytes": gsparse, "csr_bytes": csr}


def act_sparsity(net: Any, x: np.ndarray, batch: int = 256) -> dict[str, Any]:
    """Measured fraction of exact zeros after every BN -> ReLU site on windows ``x`` [N, 1, W]
    (eval mode; per site and over all activations)."""
    net.eval()
    zeros: list[int] = []
    counts: list[int] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            acts = activations(net, torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)))
            if not zeros:
                zeros, counts = [0] * len(acts), [0] * len(acts)
            for j, a in enumerate(acts):
                zeros[j] += int((a == 0).sum())
                counts[j] += a.numel()
    return {"per_site": [z / c for z, c in zip(zeros, counts, strict=True)],
            "overall": sum(zeros) / max(1, sum(counts))}
