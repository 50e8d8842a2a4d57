from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.compress import arch, slimming
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import window_batches

from .conftest import W


def _all(net: Any) -> list[np.ndarray]:
    return [np.arange(u.bn.num_features) for u in slimming.units(net)]


def test_prune_keeping_everything_is_exact(tiny_net: Any) -> None:
    x = torch.randn(4, 1, W)
    small = slimming.prune(tiny_net, _all(tiny_net))
    assert torch.allclose(small(x), tiny_net(x), atol=1e-6)


def test_prune_removes_channels_and_matches_masked_network(tiny_net: Any) -> None:
    keep = slimming.global_keep(tiny_net, 0.5)
    small = slimming.prune(tiny_net, keep)
    assert arch.arch_kwargs(small)["widths"] == [len(k) for k in keep[:-1]]
    assert arch.n_params(small) < arch.n_params(tiny_net)
    # zeroing gamma and beta of the dropped channels in the full net gives the same logits
    # as physically removing them, except for BN-offset constants, which pruning discards too
    masked = slimming.prune(tiny_net, _all(tiny_net))
    for u, k in zip(slimming.units(masked), keep, strict=True):
        drop = np.setdiff1d(np.arange(u.bn.num_features), k)
        u.bn.weight.data[drop] = 0
        u.bn.bias.data[drop] = 0
    x = torch.randn(4, 1, W)
    assert torch.allclose(small(x), masked(x), atol=1e-5)


def test_global_keep_uses_one_threshold_and_keeps_min(tiny_net: Any) -> None:
    u0 = slimming.units(tiny_net)[0].bn
    u0.weight.data[:] = 1e-4  # a whole layer below any global threshold
    keep = slimming.global_keep(tiny_net, 0.4, min_keep=3)
    assert len(keep[0]) == 3
    with pytest.raises(CompressError, match="prune ratio=1.5"):
        slimming.global_keep(tiny_net, 1.5)


def test_sparse_training_shrinks_gammas(tiny_net: Any, tiny_ws: Any) -> None:
    def total(net: Any) -> float:
        return slimming.l1_gamma(net)

    b = window_batches(tiny_ws, seed=0)
    plain = slimming.sparse_train(arch.rebuild(arch.arch_kwargs(tiny_net)), b, lam=0.0, steps=30, lr=3e-3)
    b = window_batches(tiny_ws, seed=0)
    sparse = slimming.sparse_train(arch.rebuild(arch.arch_kwargs(tiny_net)), b, lam=30.0, steps=30, lr=3e-3)
    assert total(sparse) < 0.5 * total(plain)
    zeros = sum(int((u.bn.weight == 0).sum()) for u in slimming.units(sparse))
    assert zeros > 0 and all((u.bn.weight != 0).any() for u in slimming.units(plain))


def test_checkpoint_round_trip(tmp_path: Path, tiny_model: Any) -> None:
    p = arch.save_checkpoint(tiny_model, tmp_path / "m.pt", {"edgevib.trained_on": "synthetic"})
    back, meta = arch.load_checkpoint(p)
    x = np.random.default_rng(0).standard_normal((3, 1, W)).astype(np.float32)
    np.testing.assert_allclose(back.predict_proba(x), tiny_model.predict_proba(x), atol=1e-6)
    assert back.classes == tiny_model.classes and meta == {"edgevib.trained_on": "synthetic"}
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CompressError, match="bad.pt"):
        arch.load_checkpoint(tmp_path / "bad.pt")
