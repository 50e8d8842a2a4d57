"""Tiny WDCNNs and synthetic window sets: compression tests run in seconds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.cnn import CNNModel, build_wdcnn
from edgevib.models.split import WindowSet

W = 1024  # five pools of 2 after a stride-16 first conv leave 2 positions
CLASSES = ("normal", "B007", "IR007")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def randomise_bn(net: Any, seed: int = 0) -> Any:
    """Non-trivial BN parameters and statistics, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.2
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5
    return net.eval()


@pytest.fixture
def tiny_net() -> Any:
    return randomise_bn(build_wdcnn(len(CLASSES), (8, 8, 8, 8, 8), hidden=12, window=W, pool_out=2, envelope=0))


def synthetic_windows(n_per_class: int = 8, seed: int = 0) -> WindowSet:
    """Class ``c`` is a tone at ``(c + 1) * 700`` Hz in noise; one contiguous segment per class."""
    rng = np.random.default_rng(seed)
    xs, ys, rs, ss = [], [], [], []
    t = np.arange(W * (n_per_class + 2)) / 12000.0
    for c in range(len(CLASSES)):
        sig = np.sin(2 * np.pi * (c + 1) * 700 * t) + 0.3 * rng.standard_normal(len(t))
        starts = np.arange(n_per_class) * W
        xs.append(sig[starts[:, None] + np.arange(W)])
        ys += [c] * n_per_class
        rs += [c] * n_per_class
        ss.append(starts)
    n = len(ys)
    return WindowSet(np.concatenate(xs).astype(np.float32), np.array(ys), CLASSES, np.array(rs),
                     np.concatenate(ss), tuple(f"s{c}" for c in range(len(CLASSES))), 12000.0, np.full(n, 1797.0))


@pytest.fixture
def tiny_ws() -> WindowSet:
    return synthetic_windows()


@pytest.fixture(scope="session")
def _trained() -> Any:
    from edgevib.models.augment import AugmentConfig
    from edgevib.models.compress.training import fit, window_batches

    torch.manual_seed(0)
    net = build_wdcnn(len(CLASSES), (8, 8, 8, 8, 8), hidden=12, window=W, pool_out=2, envelope=0)
    ce = torch.nn.CrossEntropyLoss()
    batches = window_batches(synthetic_windows(), seed=0, augment=AugmentConfig.none())
    return fit(net, batches, lambda n, x, y: ce(n(x), y), steps=40, lr=3e-3)


@pytest.fixture
def trained_net(_trained: Any) -> Any:
    """A tiny WDCNN trained briefly on :func:`synthetic_windows` (real BN statistics)."""
    import copy

    return copy.deepcopy(_trained).eval()


@pytest.fixture
def tiny_model(tiny_net: Any) -> CNNModel:
    return CNNModel(tiny_net, CLASSES)
