"""Scalpel-aligned pruning (``align``) and noise-robust distillation (``nkd``)."""

from __future__ import annotations

import copy
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


def test_align_first_conv_takes_its_own_multiple(tiny_net: Any) -> None:
    us = slimming.units(tiny_net)
    keep = [np.arange(5)] + [np.arange(u.bn.num_features - 3) for u in us[1:]]
    out = slimming.align_keep(tiny_net, keep, [2] + [4] * (len(us) - 1))  # first: 5 -> 6, not 4
    assert len(out[0]) == 6 and [len(k) for k in out[1:]] == [len(k) for k in slimming.align_keep(tiny_net, keep, 4)[1:]]
    with pytest.raises(CompressError, match="one per prunable layer"):
        slimming.align_keep(tiny_net, keep, [8, 8])
    stages = pipeline.run(CNNModel(copy.deepcopy(tiny_net), CLASSES), "slim,align,merge", data_free=True,
                          align=4, align_first=2, synth_per_class=2, synth_steps=2, **FAST)
    kw = arch.arch_kwargs(stages[-1].net)
    assert kw["widths"][0] % 2 == 0 and all(w % 4 == 0 for w in kw["widths"][1:] + [kw["hidden"]])


def test_data_free_nkd_noises_only_synthetic_windows(trained_net: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data-free noise-robust distillation: the student's noisy inputs are (sign-flipped) DeepInversion
    windows, the teacher scores the clean ones, and no real window is ever asked for."""
    from edgevib.models.compress import datafree, training

    def no_real(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the data-free path asked for real windows")

    monkeypatch.setattr(training, "window_batches", no_real)
    synth: list[np.ndarray] = []
    real_synth, real_noise = datafree.synthesize, distill.add_noise

    def spy_synth(*a: Any, **k: Any) -> Any:
        xs, ys = real_synth(*a, **k)
        synth.append(xs)
        return xs, ys

    noised: list[tuple[Any, Any]] = []

    def spy_noise(x: Any, *a: Any) -> Any:
        out = real_noise(x, *a)
        noised.append((x.clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(datafree, "synthesize", spy_synth)
    monkeypatch.setattr(distill, "add_noise", spy_noise)
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,merge,nkd,int8", data_free=True,
                          synth_per_class=4, synth_steps=5, noise_p=0.5, **FAST)
    assert [s.name for s in stages][-2:] == ["cnn+slim+merge+nkd", "cnn+slim+merge+nkd+int8"]
    assert len(synth) == 1 and len(noised) == FAST["kd_steps"]
    pool = torch.from_numpy(synth[0]).flatten(1)
    changed = 0
    for x, y in noised:
        flat = x.flatten(1)
        # every clean input is a synthetic window (the batches flip the sign at random)
        d = torch.minimum((flat[:, None] - pool[None]).abs().amax(-1), (flat[:, None] + pool[None]).abs().amax(-1))
        assert float(d.amin(dim=1).max()) == 0.0
        changed += int(((y - x).abs().amax(dim=(1, 2)) > 0).sum())
    assert 0.3 < changed / sum(len(x) for x, _ in noised) < 0.7  # noise_p = 0.5 of the student's copies
    saw = stages[-2].info["saw"]
    assert "12 deepinversion windows" in saw and "white noise" in saw and "U[-6, 10] dB" in saw


def test_noisy_teacher_scores_the_students_noisy_copy(trained_net: Any, tiny_ws: Any) -> None:
    """``noisy_teacher``: the teacher's targets come from the very noisy window the student sees;
    without it, from the clean window (the student's copy noisy either way)."""
    seen: dict[str, list[Any]] = {"t": [], "s": []}

    class Spy(torch.nn.Module):
        def __init__(self, net: Any, key: str) -> None:
            super().__init__()
            self.net, self.key = net, key

        def forward(self, x: Any) -> Any:
            seen[self.key].append(x.detach().clone())
            return self.net(x)

    x = torch.from_numpy(tiny_ws.x3d()[:8].copy())
    y = torch.from_numpy(tiny_ws.y[:8].copy())
    for flag in (False, True):
        seen["t"].clear()
        seen["s"].clear()
        distill.distill(Spy(copy.deepcopy(trained_net), "s"), Spy(trained_net, "t"), lambda n: (x, y), steps=3,
                        noise=(1.0, 0.0, 0.0), noisy_teacher=flag)
        assert len(seen["t"]) == len(seen["s"]) == 3
        for t, s in zip(seen["t"], seen["s"], strict=True):
            assert not torch.equal(s, x)  # p = 1: the student's copy is always noisy
            assert torch.equal(t, s) is flag and torch.equal(t, x) is not flag
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,merge,nkd", data_free=True, synth_per_class=4,
                          synth_steps=5, noise_teacher=True, **FAST)
    assert stages[-1].name == "cnn+slim+merge+nkd(noisy teacher)"
    assert "the teacher's targets from the same noisy copies" in stages[-1].info["saw"]
