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
