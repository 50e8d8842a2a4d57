from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.augment import AugmentConfig
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import wgroup
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import window_batches

from .conftest import CLASSES, W, synthetic_windows


def test_group_rms_groups_aligned_runs_of_the_reduction_dimension() -> None:
    w = torch.zeros(2, 3, 4)  # reduction dimension 12: groups [0:8], [8:12] per output row
    w[0, 1, 3] = 2.0  # flat index 7: first group of row 0
    w[1, 2, 0] = 1.0  # flat index 8: second (short, 4-long) group of row 1
    rms = wgroup.group_rms(w, 8)
    assert rms.shape == (2, 2)
    assert rms[0, 0] == pytest.approx(2.0 / np.sqrt(8)) and rms[0, 1] == 0
    assert rms[1, 0] == 0 and rms[1, 1] == pytest.approx(1.0 / np.sqrt(4))
    with pytest.raises(CompressError):
        wgroup.group_rms(w, 0)


@pytest.mark.parametrize("width", [8, 16])
def test_masks_remove_whole_aligned_groups(trained_net: Any, width: int) -> None:
    masks = wgroup.group_masks(trained_net, width, 0.5)
    assert set(masks) == {name for name, _ in wgroup.layers(trained_net)}
    for name, m in wgroup.layers(trained_net):
        r = masks[name].reshape(m.weight.shape[0], -1).numpy()
        n = r.shape[1]
        for start in range(0, n, width):  # each aligned group is all kept or all removed
            g = r[:, start:start + width]
            assert np.all((g == 0).all(1) | (g == 1).all(1))
        frac = 1 - r[:, ::width].mean()
        assert 0.3 <= frac <= 0.7, (name, frac)


def test_pruned_groups_stay_zero_through_finetuning(trained_net: Any) -> None:
    teacher = copy.deepcopy(trained_net)
    masks = wgroup.group_masks(trained_net, 8, 0.6)
    student = wgroup.mask(copy.deepcopy(trained_net), masks)
    before = {n: m.weight.detach().clone() for n, m in wgroup.layers(student)}
    batches = window_batches(synthetic_windows(), seed=0, augment=AugmentConfig.none())
    wgroup.finetune(student, teacher, batches, steps=5, lr=1e-2)
    net = wgroup.finish(student)
    changed = False
    for name, m in wgroup.layers(net):
        w = m.weight.detach()
        assert not hasattr(m, "weight_orig")
        assert torch.all(w[masks[name] == 0] == 0)
        changed |= not torch.equal(w, before[name])
    assert changed  # the kept weights did train
    rep = wgroup.weight_report(net, 8)
    assert rep["group_sparsity"] >= 0.55 and rep["group_sparse_bytes"] < rep["dense_bytes"]
    proto = CNNModel(net, CLASSES).to_onnx()  # exports as a plain WDCNN
    assert {n.op_type for n in proto.graph.node} >= {"Conv", "Relu"}


def test_mask_checks_names_and_shapes(trained_net: Any) -> None:
    with pytest.raises(CompressError):
        wgroup.mask(trained_net, {"nope": torch.ones(1)})
    with pytest.raises(CompressError):
        wgroup.mask(trained_net, {"head.1": torch.ones(2, 2)})
    with pytest.raises(CompressError):
        wgroup.group_masks(trained_net, 8, 1.0)


def test_activation_threshold_zeroes_below_theta_and_folds_into_bn(trained_net: Any) -> None:
    x = torch.from_numpy(synthetic_windows().x3d())
    base = wgroup.act_sparsity(trained_net, x.numpy())["overall"]
    thetas = wgroup.act_thresholds(trained_net, x, 0.5)
    assert all(t > 0 for t in thetas)
    shifted = wgroup.set_thresholds(copy.deepcopy(trained_net), thetas)
    # relu(y - theta) at the first site (later sites see changed inputs): zero exactly where
    # the plain activation was <= theta, shifted down by theta elsewhere
    a, b, th = wgroup.activations(trained_net.eval(), x)[0], wgroup.activations(shifted.eval(), x)[0], thetas[0]
    assert torch.equal(b == 0, a <= th)
    assert torch.allclose(b, torch.clamp(a - th, min=0), atol=1e-5)
    sp = wgroup.act_sparsity(shifted, x.numpy())
    assert sp["overall"] > base + 0.1
    logits = shifted(x)
    folded = wgroup.finish(shifted)  # theta moved into the BN shift: same function, plain ReLUs
    assert not any(isinstance(m, wgroup.ShiftedReLU) for m in folded.modules())
    assert torch.allclose(folded(x), logits, atol=1e-4)
    assert wgroup.act_sparsity(folded, x.numpy())["overall"] == pytest.approx(sp["overall"])
    with pytest.raises(CompressError):
        wgroup.set_thresholds(trained_net, [0.1])


def test_activation_l1_raises_activation_sparsity(trained_net: Any) -> None:
    batches = window_batches(synthetic_windows(), seed=0, augment=AugmentConfig.none())
    x = synthetic_windows().x3d()
    runs = {}
    for lam in (0.0, 5.0):
        net = wgroup.mask(copy.deepcopy(trained_net), wgroup.group_masks(trained_net, 8, 0.3))
        wgroup.finetune(net, trained_net, batches, steps=30, lr=1e-2, act_l1=lam)
        runs[lam] = wgroup.act_sparsity(wgroup.finish(net), x)["overall"]
    assert runs[5.0] > runs[0.0]
    with pytest.raises(CompressError):
        wgroup.finetune(trained_net, trained_net, batches, steps=1, act_l1=-1)


def test_window_constant_is_the_conftest_one() -> None:
    assert synthetic_windows().window == W
