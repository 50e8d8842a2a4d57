"""Scalpel-aligned pruning (``align``) and noise-robust distillation (``nkd``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import arch, distill, pipeline, slimming
from edgevib.models.compress.errors import CompressError

from .conftest import CLASSES

FAST = {"sparse_steps": 10, "kd_steps": 20, "calib_windows": 16, "prune_ratio": 0.5}


def test_align_rounds_every_layer_to_the_simd_multiple(tiny_net: Any) -> None:
    keep = slimming.global_keep(tiny_net, 0.5)
    sizes = [len(k) for k in keep]
    out = slimming.align_keep(tiny_net, keep, 4)
    widths = [u.bn.num_features for u in slimming.units(tiny_net)]
    for k, n, full, ko in zip(out, sizes, widths, keep, strict=True):
        want = min(full, max(4, int(np.floor(n / 4 + 0.5)) * 4))
        assert len(k) == want and len(np.unique(k)) == len(k) and np.all(np.diff(k) > 0)
        if want >= n:  # rounding up adds channels, never drops one slimming kept
            assert set(ko) <= set(k)
    with pytest.raises(CompressError, match="multiple=0"):
        slimming.align_keep(tiny_net, keep, 0)


def test_align_drops_the_lowest_gamma_when_rounding_down(tiny_net: Any) -> None:
    u = slimming.units(tiny_net)[0]
    with torch.no_grad():
        u.bn.weight.copy_(torch.arange(1, 9, dtype=torch.float32))
    keep = [np.arange(1, 8)] + [np.arange(u2.bn.num_features) for u2 in slimming.units(tiny_net)[1:]]
    out = slimming.align_keep(tiny_net, keep, 4)  # 7 kept -> nearest multiple of 4 is 8: round up
    assert out[0].tolist() == list(range(8))
    keep[0] = np.array([1, 3, 5, 6, 7])  # 5 -> 4: the weakest of those (channel 1) goes
    assert slimming.align_keep(tiny_net, keep, 4)[0].tolist() == [3, 5, 6, 7]


def test_aligned_recipe_gives_aligned_widths(trained_net: Any, tiny_ws: Any) -> None:
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,align,merge,kd", train=tiny_ws, align=4, **FAST)
    assert [s.name for s in stages][-1] == "cnn+slim+align+merge+kd"
    kw = arch.arch_kwargs(stages[-1].net)
    assert all(w % 4 == 0 for w in kw["widths"] + [kw["hidden"]])


def test_noise_reaches_the_requested_snr() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 2048, generator=gen) * 3.0
    y = distill.add_noise(x, 1.0, 0.0, 0.0, gen)
    snr = 10 * torch.log10(x.pow(2).mean(-1) / (y - x).pow(2).mean(-1))
    assert float(snr.mean()) == pytest.approx(0.0, abs=0.2)
    assert torch.equal(distill.add_noise(x, 0.0, -5.0, 5.0, gen), x)  # p = 0: untouched
    half = distill.add_noise(x, 0.5, 10.0, 10.0, gen)
    assert 0.35 < float(((half - x).abs().amax(dim=(1, 2)) > 0).float().mean()) < 0.65


def test_noise_robust_distillation_recipe(trained_net: Any, tiny_ws: Any) -> None:
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,merge,nkd,int8", train=tiny_ws, **FAST)
    assert [s.name for s in stages][-2:] == ["cnn+slim+merge+nkd", "cnn+slim+merge+nkd+int8"]
    with pytest.raises(CompressError, match="exclude each other"):
        pipeline.parse_recipe("slim,kd,nkd")
    with pytest.raises(CompressError, match="need"):
        pipeline.parse_recipe("align,kd")
    with pytest.raises(CompressError, match="noise"):
        distill.distill(stages[-2].net, trained_net, lambda n: (None, None), noise=(1.5, 0.0, 1.0))
