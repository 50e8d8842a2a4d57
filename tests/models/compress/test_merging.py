from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.compress import merging, slimming
from edgevib.models.compress.errors import CompressError

from .conftest import W


def _block_out(net: Any, x: Any, upto: int) -> Any:
    """Output of conv block ``upto`` (the merged layer's consumer), before later layers blur it."""
    z = x - x.mean(dim=-1, keepdim=True)
    z = z / (z.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-6)
    for b in net.blocks[:upto + 1]:
        z = b(z)
    return z


def _all(net: Any) -> list[np.ndarray]:
    return [np.arange(u.bn.num_features) for u in slimming.units(net)]


def test_scaled_duplicate_filter_is_merged_exactly(tiny_net: Any) -> None:
    # channel 1 of block 2 = 2.5 x channel 0 (weights and bias, same BN): out_1 = 2.5 out_0
    u = slimming.units(tiny_net)[2]
    with torch.no_grad():
        u.bn.bias[0] = 1.0  # an active channel: ReLU passes most of its output
        u.producer.weight[1] = 2.5 * u.producer.weight[0]
        u.producer.bias[1] = 2.5 * u.producer.bias[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(u.bn, name)[1] = getattr(u.bn, name)[0]
        u.bn.running_mean[1] *= 2.5
        u.bn.running_var[1] *= 2.5**2
        u.bn.bias[1] = u.bn.bias[0]
    keep = _all(tiny_net)
    keep[2] = np.delete(keep[2], 1)
    x = torch.randn(6, 1, W)
    with torch.no_grad():
        ref = _block_out(tiny_net, x, 3)
    pruned = slimming.prune(tiny_net, keep)
    merged, rep = merging.merge_prune(tiny_net, keep, threshold=0.99)
    assert rep[2].merged == 1 and rep[2].mean == 0
    with torch.no_grad():
        err_pruned = float((_block_out(pruned, x, 3) - ref).abs().max())
        err_merged = float((_block_out(merged, x, 3) - ref).abs().max())
    assert err_pruned > 1e-3 and err_merged < err_pruned / 100  # merging undoes the prune
    assert torch.allclose(merged(x), tiny_net(x), atol=1e-5)


def test_zero_gamma_channel_becomes_consumer_bias(tiny_net: Any) -> None:
    # a hidden dense unit with gamma = 0 outputs relu(beta): exactly a constant for the last layer
    u = slimming.units(tiny_net)[-1]
    with torch.no_grad():
        u.bn.weight[3] = 0.0
        u.bn.bias[3] = 0.7
    keep = _all(tiny_net)
    keep[-1] = np.delete(keep[-1], 3)
    x = torch.randn(5, 1, W)
    merged, rep = merging.merge_prune(tiny_net, keep)
    assert rep[-1].mean == 1
    assert torch.allclose(merged(x), tiny_net(x), atol=1e-5)
    assert (slimming.prune(tiny_net, keep)(x) - tiny_net(x)).abs().max() > 1e-3


def test_merge_leaves_source_untouched_and_validates(tiny_net: Any) -> None:
    before = [p.detach().clone() for p in tiny_net.parameters()]
    keep = slimming.global_keep(tiny_net, 0.5)
    merging.merge_prune(tiny_net, keep)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_net.parameters(), strict=True))
    with pytest.raises(CompressError, match="threshold=2"):
        merging.merge_prune(tiny_net, keep, threshold=2)
    with pytest.raises(CompressError, match="keep lists"):
        merging.merge_prune(tiny_net, keep[:2])


def test_expected_relu_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    beta, gamma = np.array([-1.0, 0.0, 0.5, 2.0]), np.array([0.5, 1.0, 2.0, 0.1])
    mc = np.maximum(beta + gamma * rng.standard_normal((200_000, 4)), 0).mean(axis=0)
    np.testing.assert_allclose(merging._mean_relu(beta, gamma), mc, atol=0.01)
    assert merging._mean_relu(np.array([0.7]), np.array([0.0]))[0] == pytest.approx(0.7)
