"""Network slimming (Liu et al., ICCV 2017) for the WDCNN.

1. :func:`sparse_train`: train with an L1 penalty on every batch-norm scale ``gamma``, so
   channels the classifier does not need drift towards ``gamma = 0``.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgevib.models.compress.arch import arch_kwargs, rebuild
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


def units(net: Any) -> list[Unit]:
    """The five conv blocks and the hidden dense layer, in forward order."""
    b, head = net.blocks, net.head
    out = [Unit(b[i][0], b[i][1], b[i + 1][0], 1) for i in range(len(b) - 1)]
    out.append(Unit(b[-1][0], b[-1][1], head[2], arch_kwargs(net)["pool_out"]))
    out.append(Unit(head[2], head[3], head[5], 1))
    return out


def l1_gamma(net: Any) -> Any:
    """Sum of ``|gamma|`` over all prunable BN layers (the slimming penalty)."""
    return sum(u.bn.weight.abs().sum() for u in units(net))


def sparse_train(net: Any, batches: BatchFn, *, lam: float = 1e-3, steps: int = 600, lr: float = 1e-3,
                 teacher: Any = None, seed: int = 0, progress: Progress | None = None) -> Any:
    """Train ``net`` in place with cross-entropy plus ``lam * sum|gamma|``.

    With a ``teacher`` the data term is the distillation loss on the teacher's outputs
    instead of labels (the data-free path, whose batches are synthesised), and the BN
    statistics stay fixed.
    """
    if lam < 0:
        raise CompressError(_COMP, f"lam={lam}", "use a non-negative L1 weight, e.g. 1e-3")
    from edgevib.models.compress.distill import kd_loss

    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.05)

    def loss(n: Any, x: Any, y: Any) -> Any:
        if teacher is None:
            return ce(n(x), y) + lam * l1_gamma(n)
        with torch.no_grad():
            t = teacher(x)
        return kd_loss(n(x), t, y, alpha=1.0) + lam * l1_gamma(n)

    return fit(net, batches, loss, steps=steps, lr=lr, seed=seed, bn_stats=teacher is None, progress=progress,
               label="slim")


def global_keep(net: Any, ratio: float, *, min_keep: int = 2) -> list[np.ndarray]:
    """Sorted channel indices to keep per unit: ``|gamma|`` above the global ``ratio`` quantile
    (at least ``min_keep`` per layer, the largest ones, so no layer vanishes)."""
    if not 0 <= ratio < 1:
        raise CompressError(_COMP, f"prune ratio={ratio}", "use a fraction of channels in [0, 1), e.g. 0.7")
    gammas = [u.bn.weight.detach().abs().numpy() for u in units(net)]
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


def _in_index(keep_prev: np.ndarray, group: int) -> Any:
    """Consumer input columns fed by the kept channels (``group`` columns per channel)."""
    return torch.from_numpy((keep_prev[:, None] * group + np.arange(group)).ravel())


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
            prev = _in_index(k, u.group)
        last_src, last_dst = src[-1].consumer, dst[-1].consumer
        last_dst.weight.copy_(last_src.weight[:, prev])
        last_dst.bias.copy_(last_src.bias)
    return small.eval()
