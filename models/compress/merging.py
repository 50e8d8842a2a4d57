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
``threshold``, and take ``s`` as the least-squares scale. A channel whose folded weights are
negligible (slimming drove ``gamma`` to ~0) outputs the constant ``relu(c_p)``; that constant
goes into the consumer's bias (exact except at a conv's zero-padded edges).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.slimming import Unit, prune, units

from edgevib.extras import require

torch: Any = require("torch", extra="train", feature="neuron merging")
log = logging.getLogger(__name__)
_COMP = "models.compress.merging"


@dataclass
class MergeReport:
    """Per unit: channels merged into a kept one, folded as constants, and dropped."""

    merged: int
    constant: int
    dropped: int


def _folded(u: Unit, keep_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """BN-folded weights ``a w`` [C, D] (kept input columns only) and offsets ``c`` [C]."""
    bn = u.bn
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy().astype(np.float64)
    w = u.producer.weight.detach().numpy().astype(np.float64)
    if keep_in is not None:
        w = w[:, keep_in]
    c = a * (u.producer.bias.detach().numpy() - bn.running_mean.detach().numpy()) + bn.bias.detach().numpy()
    return a[:, None] * w.reshape(len(w), -1), c


def _compensate(u: Unit, keep: np.ndarray, keep_in: np.ndarray | None, threshold: float,
                const_tol: float) -> tuple[int, int, int]:
    """Fold every pruned channel of ``u`` into ``u.consumer`` (weights edited in place)."""
    fw, c = _folded(u, keep_in)
    f = np.concatenate([fw, c[:, None]], axis=1)
    norms = np.linalg.norm(fw, axis=1)
    scale = np.median(norms[keep]) if len(keep) else 1.0
    pruned = np.setdiff1d(np.arange(len(f)), keep)
    cw = u.consumer.weight.detach()  # [out, in*group] dense or [out, in, k] conv
    cb = u.consumer.bias.detach()
    g = u.group
    fk = f[keep]
    fk_unit = fk / (np.linalg.norm(fk, axis=1, keepdims=True) + 1e-12)
    n_merge = n_const = n_drop = 0
    with torch.no_grad():
        for p in pruned:
            cols_p = slice(p * g, (p + 1) * g)
            if norms[p] <= const_tol * scale:
                # input-independent channel: its constant output becomes consumer bias
                val = max(float(c[p]), 0.0)
                cb += val * cw[:, cols_p].reshape(len(cw), -1).sum(dim=1)
                n_const += 1
                continue
            cos = fk_unit @ (f[p] / (np.linalg.norm(f[p]) + 1e-12))
            j = int(np.argmax(cos))
            if cos[j] < threshold:
                n_drop += 1
                continue
            s = float(f[p] @ fk[j] / (fk[j] @ fk[j]))
            k = int(keep[j])
            cw[:, k * g:(k + 1) * g] += s * cw[:, cols_p]
            n_merge += 1
    return n_merge, n_const, n_drop


def merge_prune(net: Any, keep: list[np.ndarray], *, threshold: float = 0.3,
                const_tol: float = 0.02) -> tuple[Any, list[MergeReport]]:
    """Compensate the channels outside ``keep`` (neuron merging), then :func:`prune`.

    ``net`` is left unchanged; returns the narrow network and what happened per unit.
    """
    if not -1 <= threshold <= 1 or const_tol < 0:
        raise CompressError(_COMP, f"threshold={threshold}, const_tol={const_tol}",
                            "use a cosine threshold in [-1, 1] and const_tol >= 0")
    work = copy.deepcopy(net).eval()
    us = units(work)
    if len(keep) != len(us):
        raise CompressError(_COMP, f"{len(keep)} keep lists for {len(us)} units", "use slimming.global_keep(net)")
    reports: list[MergeReport] = []
    keep_in: np.ndarray | None = None
    for u, k in zip(us, keep, strict=True):
        m, cst, d = _compensate(u, k, keep_in, threshold, const_tol)
        reports.append(MergeReport(m, cst, d))
        # the consumer (next producer) reads ``group`` columns per channel; 1 for a conv
        keep_in = (k[:, None] * u.group + np.arange(u.group)).ravel()
    log.info("merging: merged %s, constants %s, dropped %s", [r.merged for r in reports],
             [r.constant for r in reports], [r.dropped for r in reports])
    return prune(work, keep), reports
