from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.compress import datafree
from edgevib.models.compress.errors import CompressError


def _bn_gap(net: Any, x: np.ndarray) -> float:
    hooks = [datafree._BNStatLoss(m) for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        net(torch.from_numpy(x))
    for h in hooks:
        h.handle.remove()
    return float(sum(h.loss for h in hooks))


def test_synthesis_matches_bn_statistics_and_targets(trained_net: Any) -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((24, 1, trained_net.window)).astype(np.float32)
    x, y = datafree.synthesize(trained_net, 8, steps=100, lr=0.1, bn_weight=0.3, seed=0)
    assert x.shape == (24, 1, trained_net.window) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert np.bincount(y).tolist() == [8, 8, 8]
    assert _bn_gap(trained_net, x) < 0.8 * _bn_gap(trained_net, noise)
    with torch.no_grad():
        pred = trained_net(torch.from_numpy(x)).argmax(1).numpy()
    assert np.mean(pred == y) >= 0.6  # chance is 1/3
    assert all(p.requires_grad for p in trained_net.parameters())  # teacher restored


def test_synthesis_rejects_single_window_batches(trained_net: Any) -> None:
    with pytest.raises(CompressError, match="n_per_class=1"):
        datafree.synthesize(trained_net, 1)
