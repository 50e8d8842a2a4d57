"""Neuron merging (Kim et al., NeurIPS 2020): compensate pruned channels without data.

A pruned channel ``p`` of a conv/dense layer followed by BN and ReLU outputs
``relu(a_p (w_p . x) + c_p)`` with ``a = gamma / sqrt(var + eps)`` and
``c = a (bias - mean) + beta``. If a kept channel ``k`` has ``(a_p w_p, c_p) ~ s (a_k w_k, c_k)``
with ``s > 0``, then ``relu`` (and max/avg pooling) being positively homogeneous gives
``out_p ~ s * out_k``; adding ``s`` times the consumer's weights of ``p`` to those of ``k``
keeps the next layer's input (the paper's merge, BN variant).

Which variant: we compare BN-folded filters in homogeneous coordinates ``[a w, c]`` by
cosine similarity (so direction *and* bias must agree, the paper's BN condition folded into
one measure), merge ``p`` into its most similar kept ``k`` when the cosine exceeds
``threshold``, and take ``s`` as the least-squares scale.

Our addition (also data-free): a BN layer says each pre-ReLU channel has mean ``beta`` and
spread ``|gamma|``, so ``E[out] = E[relu(N(beta, gamma^2))]``. A pruned channel without a
twin is replaced by that constant, and a merged one's mean error ``E[out_p] - s E[out_k]``
goes into the consumer's bias too. Without this the next BN's running mean no longer
matches its shrunken input, which breaks the network more than the lost channel itself.
For ``gamma = 0`` (slimming) the constant is exactly ``relu(beta)``; max pooling and a
conv's zero-padded edges make the rest approximate.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.slimming import Unit, prune, units

from edgevib.extras import require

torch: Any = require("torch", extra="train", feature="neuron merging")
log = logging.getLogger(__name__)
_COMP = "models.compress.merging"


@dataclass
class MergeReport:
    """Per unit: pruned channels merged into a kept twin, and replaced by their mean output."""

    merged: int
    mean: int


def _folded(u: Unit, keep_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """BN-folded weights ``a w`` [C, D] (kept input columns only) and offsets ``c`` [C]."""
    bn = u.bn
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy().astype(np.float64)
    w = u.producer.weight.detach().numpy().astype(np.float64)
    if keep_in is not None:
        w = w[:, keep_in]
    c = a * (u.producer.bias.detach().numpy() - bn.running_mean.detach().numpy()) + bn.bias.detach().numpy()
    return a[:, None] * w.reshape(len(w), -1), c


def _mean_relu(beta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """``E[relu(y)]`` for ``y ~ N(beta, gamma^2)``: BN makes each pre-ReLU channel have mean
    ``beta`` and spread ``|gamma|`` under its running statistics, so no data is needed."""
    sd = np.maximum(np.abs(gamma), 1e-12)
    z = beta / sd
    return beta * scipy.stats.norm.cdf(z) + sd * scipy.stats.norm.pdf(z)


def _compensate(u: Unit, keep: np.ndarray, keep_in: np.ndarray | None, threshold: float) -> tuple[int, int]:
    """Fold every pruned channel of ``u`` into ``u.consumer`` (weights edited in place)."""
    fw, c = _folded(u, keep_in)
    f = np.concatenate([fw, c[:, None]], axis=1)
    mean = _mean_relu(u.bn.bias.detach().numpy().astype(np.float64), u.bn.weight.detach().numpy().astype(np.float64))
    pruned = np.setdiff1d(np.arange(len(f)), keep)
    cw = u.consumer.weight.detach()  # [out, in*group] dense or [out, in, k] conv
    cb = u.consumer.bias.detach()
    g = u.group
    fk = f[keep]
    fk_unit = fk / (np.linalg.norm(fk, axis=1, keepdims=True) + 1e-12)
    n_merge = n_mean = 0
    with torch.no_grad():
        for p in pruned:
            cols_p = slice(p * g, (p + 1) * g)
            w_sum = cw[:, cols_p].reshape(len(cw), -1).sum(dim=1)
            cos = fk_unit @ (f[p] / (np.linalg.norm(f[p]) + 1e-12))
            j = int(np.argmax(cos))
            if np.linalg.norm(fw[p]) > 1e-8 and cos[j] >= threshold:
                s = float(f[p] @ fk[j] / (fk[j] @ fk[j]))
                k = int(keep[j])
                cw[:, k * g:(k + 1) * g] += s * cw[:, cols_p]
                # what the scaled twin misses on average goes into the bias
                cb += float(mean[p] - s * mean[k]) * w_sum
                n_merge += 1
            else:
                # no twin (or an input-independent channel): keep its expected output
                cb += float(mean[p]) * w_sum
                n_mean += 1
    return n_merge, n_mean


def merge_prune(net: Any, keep: list[np.ndarray], *, threshold: float = 0.3) -> tuple[Any, list[MergeReport]]:
    """Compensate the channels outside ``keep`` (neuron merging), then :func:`prune`.

    ``net`` is left unchanged; returns the narrow network and what happened per unit.
    """
    if not 0 <= threshold <= 1:
        raise CompressError(_COMP, f"threshold={threshold}", "use a cosine threshold in [0, 1], e.g. 0.3")
    work = copy.deepcopy(net).eval()
    us = units(work)
    if len(keep) != len(us):
        raise CompressError(_COMP, f"{len(keep)} keep lists for {len(us)} units", "use slimming.global_keep(net)")
    reports: list[MergeReport] = []
    keep_in: np.ndarray | None = None
    for u, k in zip(us, keep, strict=True):
        reports.append(MergeReport(*_compensate(u, k, keep_in, threshold)))
        keep_in = u.in_columns(k)  # what the next unit's producer still reads
    log.info("merging: merged %s, mean-filled %s", [r.merged for r in reports], [r.mean for r in reports])
    return prune(work, keep), reports
