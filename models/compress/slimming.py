"""Network slimming (Liu et al., ICCV 2017) for the WDCNN.

1. :func:`sparse_train`: train with an L1 penalty on every batch-norm scale ``gamma``, so
   channels the classifier does not need go to ``gamma = 0``. The penalty is applied as a
   proximal step (soft-thresholding ``gamma`` by ``lr * lam`` after each AdamW step):
   Adam normalises gradient size, so an L1 term inside the loss would move every gamma by
   about ``lr`` per step whatever ``lam`` is; the proximal form keeps ``lam`` meaningful and
   sets unneeded gammas exactly to zero.
2. :func:`global_keep`: one global threshold on ``|gamma|`` over all BN layers (the
   ``ratio`` quantile) picks the channels to keep, so layers get pruned unevenly.
3. :func:`prune`: build a physically narrower WDCNN and copy the kept weights. Fine-tuning
   (or distillation) follows in the pipeline.

A "unit" is one BN layer with the layer that feeds it (``producer``) and the layer that
reads its channels (``consumer``); ``group`` is how many consumer inputs one channel feeds
(``pool_out`` after the last conv block, whose output is pooled then flattened).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgevib.models.compress.arch import arch_kwargs, head_layers, rebuild
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import BatchFn, fit

from edgevib.extras import require
from edgevib.progress import Progress

torch: Any = require("torch", extra="train", feature="network slimming")
log = logging.getLogger(__name__)
_COMP = "models.compress.slimming"


@dataclass(frozen=True)
class Unit:
    """A prunable BN layer of a WDCNN with its producer and consumer layers."""

    producer: Any
    bn: Any
    consumer: Any
    group: int
    extra_in: int = 0  # trailing consumer inputs fed by something else (the envelope branch)

    def in_columns(self, keep: np.ndarray) -> np.ndarray:
        """Consumer input columns that survive when this unit keeps channels ``keep``."""
        cols = (keep[:, None] * self.group + np.arange(self.group)).ravel()
        n = self.bn.num_features * self.group
        return np.concatenate([cols, np.arange(n, n + self.extra_in)]).astype(np.int64)


def units(net: Any) -> list[Unit]:
    """The conv blocks and the hidden dense layer, in forward order."""
    b = net.blocks
    fc1, bn, fc2 = head_layers(net)
    pool_out = arch_kwargs(net)["pool_out"]
    out = [Unit(b[i][0], b[i][1], b[i + 1][0], 1) for i in range(len(b) - 1)]
    extra = int(fc1.in_features) - int(b[-1][1].num_features) * pool_out
    out.append(Unit(b[-1][0], b[-1][1], fc1, pool_out, extra))
    out.append(Unit(fc1, bn, fc2, 1))
    return out


def l1_gamma(net: Any) -> Any:
    """Sum of ``|gamma|`` over all prunable BN layers (the slimming penalty), a float."""
    return float(sum(float(u.bn.weight.detach().abs().sum()) for u in units(net)))


def _shrink(lam: float) -> Any:
    def step(net: Any, lr: float) -> None:
        with torch.no_grad():
            for u in units(net):
                g = u.bn.weight
                g.copy_(torch.sign(g) * torch.clamp(g.abs() - lr * lam, min=0.0))

    return step


def sparse_train(net: Any, batches: BatchFn, *, lam: float = 0.5, steps: int = 500, lr: float = 1e-3,
                 gamma_lr: float = 1e-2, teacher: Any = None, seed: int = 0,
                 progress: Progress | None = None) -> Any:
    """Train ``net`` in place on cross-entropy with ``lam * sum|gamma|`` (proximal L1).

    The gammas learn at ``gamma_lr`` (the rest at ``lr``) and shrink by ``gamma_lr * lam`` per
    step: with Adam's normalised steps a gamma survives only if its gradient keeps pushing it
    up (``lam < 1``), and a few hundred steps suffice to zero the rest from ``gamma ~ 1``.

    With a ``teacher`` the data term is the distillation loss on the teacher's outputs
    instead of labels (the data-free path, whose batches are synthesised), and the BN
    statistics stay fixed.
    """
    if lam < 0:
        raise CompressError(_COMP, f"lam={lam}", "use a non-negative L1 weight, e.g. 1.0")
    from edgevib.models.compress.distill import kd_loss

    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.05)

    def loss(n: Any, x: Any, y: Any) -> Any:
        if teacher is None:
            return ce(n(x), y)
        with torch.no_grad():
            t = teacher(x)
        return kd_loss(n(x), t, y, alpha=1.0)

    gammas = [u.bn.weight for u in units(net)]
    ids = {id(g) for g in gammas}
    groups = [{"params": gammas, "lr": gamma_lr, "weight_decay": 0.0},
              {"params": [p for p in net.parameters() if id(p) not in ids], "lr": lr}]
    return fit(net, batches, loss, steps=steps, lr=lr, seed=seed, bn_stats=teacher is None, progress=progress,
               label="slim", after_step=_shrink(lam), groups=groups)


def global_keep(net: Any, ratio: float | None = None, *, min_keep: int = 2, per_layer_scale: bool = True,
                zero_tol: float = 1e-3) -> list[np.ndarray]:
    """Sorted channel indices to keep per unit: score above the global ``ratio`` quantile
    (at least ``min_keep`` per layer, the largest ones, so no layer vanishes). With
    ``ratio=None`` the threshold is ``zero_tol``: prune exactly what sparsity training zeroed.

    The score is ``|gamma|``, divided by the layer's largest ``|gamma|`` when
    ``per_layer_scale`` (our deviation from Liu et al.): every conv block feeds another BN,
    so a whole layer's gammas can shrink together at no cost, and raw values then say more
    about the layer than about the channel.
    """
    if ratio is not None and not 0 <= ratio < 1:
        raise CompressError(_COMP, f"prune ratio={ratio}", "use a fraction of channels in [0, 1), e.g. 0.7, or None")
    gammas = [u.bn.weight.detach().abs().numpy().astype(np.float64) for u in units(net)]
    if per_layer_scale:
        gammas = [g / g.max() if g.max() > 0 else g for g in gammas]
    if ratio is None:
        thr = zero_tol
    else:
        thr = float(np.quantile(np.concatenate(gammas), ratio)) if ratio > 0 else -1.0
    keep = []
    for g in gammas:
        k = np.flatnonzero(g > thr)
        if len(k) < min_keep:
            k = np.sort(np.argsort(-g)[:min_keep])
        keep.append(k)
    log.info("slimming: threshold %.4g keeps %s of %s channels", thr, [len(k) for k in keep],
             [len(g) for g in gammas])
    return keep


def top_keep(net: Any, counts: Sequence[int]) -> list[np.ndarray]:
    """Sorted indices of the ``counts[i]`` channels of unit ``i`` with the largest ``|gamma|``
    (at most the layer's width): fixed widths, e.g. from a teacher that had no sparsity training."""
    us = units(net)
    if len(counts) != len(us) or min(counts) < 1:
        raise CompressError(_COMP, f"widths {list(counts)} for {len(us)} prunable layers",
                            f"give {len(us)} positive channel counts, one per layer")
    keep = [np.sort(np.argsort(-u.bn.weight.detach().abs().numpy(), kind="stable")[:c]) for u, c in zip(us, counts, strict=True)]
    log.info("slimming: keeps the top-|gamma| %s of %s channels", [len(k) for k in keep], [u.bn.num_features for u in us])
    return keep


def align_keep(net: Any, keep: list[np.ndarray], multiple: int | Sequence[int] = 16, *,
               per_layer_scale: bool = True) -> list[np.ndarray]:
    """Scalpel (Yu et al., ISCA 2017) for a dense CPU: every unit keeps a multiple of ``multiple``
    channels (the SIMD width: 16 float32 lanes with AVX-512, 8 with AVX2), the nearest one to
    what ``keep`` holds (at least one multiple, at most the layer's width). Channels are added
    or dropped by the same layer-relative ``|gamma|`` score as :func:`global_keep`.
    ``multiple`` may also be one value per unit (e.g. 8 for the wide first conv, 16 elsewhere).

    Scalpel's weight pruning in SIMD-aligned groups needs a sparse kernel ONNX Runtime does not
    have; here only whole channels (nodes) go, so the dense GEMMs get aligned shapes.
    """
    us = units(net)
    multiples = [int(multiple)] * len(us) if isinstance(multiple, int | np.integer) else [int(m) for m in multiple]
    if len(multiples) != len(us) or min(multiples) < 1:
        raise CompressError(_COMP, f"align multiple={multiple}", "use the SIMD width in float32 lanes, e.g. 8 or 16 "
                            f"(one int, or one per prunable layer: {len(us)} here)")
    out = []
    for u, k, m in zip(us, keep, multiples, strict=True):
        g = u.bn.weight.detach().abs().numpy().astype(np.float64)
        if per_layer_scale and g.max() > 0:
            g = g / g.max()
        n = len(g)
        target = min(n, max(m, int(np.floor(len(k) / m + 0.5)) * m))
        # keep what slimming kept first (by score), then the best of the rest
        order = np.concatenate([k[np.argsort(-g[k], kind="stable")],
                                np.setdiff1d(np.arange(n), k)[np.argsort(-g[np.setdiff1d(np.arange(n), k)],
                                                                            kind="stable")]])
        out.append(np.sort(order[:target]))
    log.info("align %s: keeps %s channels (slimming kept %s)", multiples, [len(k) for k in out],
             [len(k) for k in keep])
    return out


def prune(net: Any, keep: list[np.ndarray]) -> Any:
    """A narrower copy of ``net`` holding only the ``keep`` channels of every unit."""
    src = units(net)
    if len(keep) != len(src) or any(len(k) == 0 for k in keep):
        raise CompressError(_COMP, f"keep lists of lengths {[len(k) for k in keep]} for {len(src)} units",
                            "pass one non-empty index array per unit (global_keep)")
    kw = arch_kwargs(net)
    small = rebuild(kw, widths=[len(k) for k in keep[:-1]], hidden=len(keep[-1]))
    dst = units(small)
    with torch.no_grad():
        prev = None  # input columns of the current producer; None = all (the raw signal)
        for u, v, k in zip(src, dst, keep, strict=True):
            ki = torch.from_numpy(k)
            w = u.producer.weight[ki]
            v.producer.weight.copy_(w if prev is None else w[:, prev])
            v.producer.bias.copy_(u.producer.bias[ki])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(v.bn, name).copy_(getattr(u.bn, name)[ki])
            v.bn.num_batches_tracked.copy_(u.bn.num_batches_tracked)
            prev = torch.from_numpy(u.in_columns(k))
        last_src, last_dst = src[-1].consumer, dst[-1].consumer
        last_dst.weight.copy_(last_src.weight[:, prev])
        last_dst.bias.copy_(last_src.bias)
        if getattr(net, "envelope", None) is not None:
            small.envelope.load_state_dict(net.envelope.state_dict())
    return small.eval()
