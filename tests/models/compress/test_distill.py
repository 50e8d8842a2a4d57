from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.compress import arch, distill, slimming
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import tensor_batches

from .conftest import W


def test_kd_loss_is_zero_on_identical_logits_and_scaled_by_t2() -> None:
    t = torch.randn(8, 3)
    y = torch.zeros(8, dtype=torch.long)
    assert float(distill.kd_loss(t, t, y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(8, 3)
    # soft term grows with T^2 relative to the raw KL at that temperature
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / 2, 1), torch.softmax(t / 2, 1), reduction="batchmean")
    assert float(distill.kd_loss(s, t, y, temperature=2, alpha=1.0)) == pytest.approx(4 * float(kl), rel=1e-5)
    with pytest.raises(CompressError, match="temperature=0"):
        distill.distill(None, None, None, temperature=0)


def test_student_moves_towards_teacher(tiny_net: Any) -> None:
    student = slimming.prune(tiny_net, slimming.global_keep(tiny_net, 0.6))
    arch.rebuild(arch.arch_kwargs(student))  # narrower shape rebuilds
    x = np.random.default_rng(0).standard_normal((32, 1, W)).astype(np.float32)
    y = np.zeros(32, np.int64)

    def gap() -> float:
        with torch.no_grad():
            xt = torch.from_numpy(x)
            return float(distill.kd_loss(student(xt), tiny_net(xt), torch.from_numpy(y), alpha=1.0))

    before = gap()
    distill.distill(student, tiny_net, tensor_batches(x, y), steps=40, alpha=1.0, lr=3e-3)
    assert gap() < 0.7 * before


def test_mix_standardises_then_mixes_two_windows_of_the_batch() -> None:
    # two windows in different units (x1000) and offsets: each weighs by its lam, not by its gain
    t = np.linspace(0, 1, 256, dtype=np.float32)
    x = torch.from_numpy(np.stack([np.sin(40 * t), 1000 * np.sign(np.sin(7 * t)) + 5])[:, None, :].astype(np.float32))
    z = distill.mix(x, 1.0, np.random.default_rng(3))
    std = (x - x.mean(-1, keepdim=True)) / (x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True).sqrt()
    # every output is a convex combination of the two standardised windows
    for row in z[:, 0]:
        d = (std[0, 0] - std[1, 0]).numpy()
        lam, *_ = np.linalg.lstsq(d[:, None], (row - std[1, 0]).numpy(), rcond=None)
        assert -1e-4 <= float(lam[0]) <= 1 + 1e-4
        assert torch.allclose(row, float(lam[0]) * std[0, 0] + (1 - float(lam[0])) * std[1, 0], atol=1e-4)
    assert torch.equal(z, distill.mix(x, 1.0, np.random.default_rng(3)))  # seeded


def test_mixup_distillation_needs_alpha_one_and_moves_the_student(tiny_net: Any) -> None:
    with pytest.raises(CompressError, match="alpha=1"):
        distill.distill(None, None, None, mixup=1.0, alpha=0.7)
    student = slimming.prune(tiny_net, slimming.global_keep(tiny_net, 0.6))
    x = np.random.default_rng(0).standard_normal((32, 1, W)).astype(np.float32)
    y = np.zeros(32, np.int64)

    def gap() -> float:
        with torch.no_grad():
            xt = distill.mix(torch.from_numpy(x), 1.0, np.random.default_rng(9))
            return float(distill.kd_loss(student(xt), tiny_net(xt), torch.from_numpy(y), alpha=1.0))

    before = gap()
    distill.distill(student, tiny_net, tensor_batches(x, y), steps=40, alpha=1.0, lr=3e-3, mixup=1.0)
    assert gap() < 0.7 * before
