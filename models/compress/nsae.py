"""Compress an NSAE-LCN model: prune learned local filters, then quantize to INT8.

A filter's importance is ``||clf_w[k]|| * std(F_k)`` on training windows: how much its
feature can move the logits. Pruned features are replaced by their training mean (folded
into the bias, so nothing shifts on average), then the softmax is refitted on the kept
features (L-BFGS with the model's own :func:`~edgevib.models.nsae_lcn.softmax_cost`).
The pruned model exports through the NSAE-LCN engineer's ONNX builder; INT8 goes through
:func:`~edgevib.models.compress.quantize.quantize_int8_static`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import scipy.optimize
from edgevib.models import nsae_lcn
from edgevib.models.compress.errors import CompressError

log = logging.getLogger(__name__)
_COMP = "models.compress.nsae"


def importance(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter importance [K] and the features' training means [K] on windows ``x`` [N,1,W]."""
    f = model.features(x)
    return np.linalg.norm(model.clf_w, axis=1) * f.std(axis=0), f.mean(axis=0)


def prune_filters(model: Any, x: np.ndarray, y: np.ndarray | None = None, *, keep: int,
                  refit_iters: int = 200, weight_decay: float = 1e-4) -> Any:
    """An NSAE-LCN with the ``keep`` most important filters (softmax refitted when ``y`` given)."""
    k_all = len(model.filters)
    if not 1 <= keep <= k_all:
        raise CompressError(_COMP, f"keep={keep} of {k_all} filters", f"use 1 <= keep <= {k_all}")
    imp, mean = importance(model, x)
    kept = np.sort(np.argsort(-imp)[:keep])
    drop = np.setdiff1d(np.arange(k_all), kept)
    w = model.clf_w[kept].astype(np.float64)
    b = model.clf_b.astype(np.float64) + mean[drop] @ model.clf_w[drop]
    if y is not None and refit_iters > 0:
        f = model.features(x)[:, kept]
        mu, sd = f.mean(axis=0), f.std(axis=0) + 1e-8
        # warm start from the folded weights, expressed on standardised features
        theta0 = np.concatenate([(w * sd[:, None]).ravel(), b + mu @ w])
        n_cls = w.shape[1]
        res = scipy.optimize.minimize(nsae_lcn.softmax_cost, theta0, args=((f - mu) / sd, np.eye(n_cls)[y],
                                      weight_decay), jac=True, method="L-BFGS-B", options={"maxiter": refit_iters})
        v = res.x[:keep * n_cls].reshape(keep, n_cls)
        w, b = v / sd[:, None], res.x[keep * n_cls:] - (mu / sd) @ v
    log.info("nsae: kept %d of %d filters", keep, k_all)
    return dataclasses.replace(model, filters=model.filters[kept].copy(), clf_w=w.astype(np.float32),
                               clf_b=b.astype(np.float32))
