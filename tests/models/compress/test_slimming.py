from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.augment import AugmentConfig
from edgevib.models.cnn import build_wdcnn
from edgevib.models.compress import arch, merging, slimming
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import window_batches

from .conftest import W, randomise_bn


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
    u0.weight.data[:] = 1e-4  # a whole layer far below the others
    assert len(slimming.global_keep(tiny_net, 0.4, min_keep=3, per_layer_scale=False)[0]) == 3
    # relative to its own largest gamma the layer is uniform: nothing in it falls below
    assert len(slimming.global_keep(tiny_net, 0.4, min_keep=3)[0]) == 8
    u0.weight.data[:4] = 0.0  # what sparsity training zeroed is what ratio=None prunes
    assert slimming.global_keep(tiny_net, None)[0].tolist() == [4, 5, 6, 7]
    with pytest.raises(CompressError, match="prune ratio=1.5"):
        slimming.global_keep(tiny_net, 1.5)


def test_top_keep_keeps_the_largest_gammas_per_layer(tiny_net: Any) -> None:
    us = slimming.units(tiny_net)
    g = us[1].bn.weight.detach().abs().numpy()
    keep = slimming.top_keep(tiny_net, [2] * (len(us) - 1) + [10_000])
    assert keep[1].tolist() == sorted(np.argsort(-g)[:2].tolist())
    assert [len(k) for k in keep[:-1]] == [2] * (len(us) - 1)
    assert len(keep[-1]) == us[-1].bn.num_features  # at most the layer's width
    with pytest.raises(CompressError, match="one per layer"):
        slimming.top_keep(tiny_net, [2])


def test_sparse_training_shrinks_gammas(tiny_net: Any, tiny_ws: Any) -> None:
    def total(net: Any) -> float:
        return slimming.l1_gamma(net)

    b = window_batches(tiny_ws, seed=0, augment=AugmentConfig.none())
    plain = slimming.sparse_train(arch.rebuild(arch.arch_kwargs(tiny_net)), b, lam=0.0, steps=30, lr=3e-3)
    b = window_batches(tiny_ws, seed=0, augment=AugmentConfig.none())
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


def test_envelope_branch_is_kept_whole() -> None:
    net = randomise_bn(build_wdcnn(3, (8, 8, 8, 8, 8), hidden=12, window=W, pool_out=2, envelope=2))
    x = torch.randn(4, 1, W)
    assert torch.allclose(slimming.prune(net, _all(net))(x), net(x), atol=1e-5)
    keep = slimming.global_keep(net, 0.5)
    small, _ = merging.merge_prune(net, keep)
    assert arch.arch_kwargs(small)["envelope"] == 2 and small(x).shape == (4, 3)
    assert torch.equal(small.envelope.bandpass.weight, net.envelope.bandpass.weight)
