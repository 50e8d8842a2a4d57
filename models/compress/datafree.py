"""Data-free windows synthesised from the teacher (DeepInversion, Yin et al., CVPR 2020).

Random inputs are optimised so that, at every batch-norm layer of the teacher, the batch
mean and variance of the layer's input match the running statistics stored in the BN
(which summarise the real training data), while a cross-entropy term makes the teacher
assign each window to the class it is synthesised for. A random circular shift per step
(DeepInversion's jitter) keeps the windows from over-fitting one alignment. The windows
then serve for distillation and INT8 calibration instead of real recordings.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require
from edgevib.progress import Progress, null_progress

torch: Any = require("torch", extra="train", feature="data-free synthesis")
log = logging.getLogger(__name__)
_COMP = "models.compress.datafree"


class _BNStatLoss:
    """Forward hook: distance of a BN input's batch statistics to the BN's running ones."""

    def __init__(self, bn: Any) -> None:
        self.loss: Any = 0.0
        self.handle = bn.register_forward_hook(self.hook)

    def hook(self, bn: Any, inputs: tuple[Any, ...], _out: Any) -> None:
        x = inputs[0]
        dims = [0, 2] if x.dim() == 3 else [0]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        self.loss = torch.norm(mean - bn.running_mean, 2) + torch.norm(var - bn.running_var, 2)


def synthesize(teacher: Any, n_per_class: int = 32, *, steps: int = 300, lr: float = 0.05,
               bn_weight: float = 1.0, window: int | None = None, batch_classes: int | None = None,
               seed: int = 0, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``x`` float32 [n_classes * n_per_class, 1, W] and their target classes ``y``.

    All classes are optimised in one batch (``batch_classes`` limits it), so the BN batch
    statistics are those of a class-balanced batch, as in training.
    """
    if n_per_class < 2 or steps < 1 or bn_weight < 0:
        raise CompressError(_COMP, f"n_per_class={n_per_class}, steps={steps}, bn_weight={bn_weight}",
                            "use n_per_class >= 2 (batch statistics need a batch), steps >= 1, bn_weight >= 0")
    report = progress or null_progress
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    n_classes = int(teacher.head[-1].out_features)
    w = int(window or teacher.window)
    y_all = np.repeat(np.arange(n_classes), n_per_class)
    chunk = (batch_classes or n_classes) * n_per_class
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    hooks = [_BNStatLoss(m) for m in teacher.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    out = []
    try:
        for lo in range(0, len(y_all), chunk):
            y = torch.from_numpy(y_all[lo:lo + chunk])
            x = torch.randn(len(y), 1, w, generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for step in range(steps):
                shift = int(rng.integers(0, w))
                logits = teacher(torch.roll(x, shift, dims=-1))
                ce = torch.nn.functional.cross_entropy(logits, y)
                bn = sum(h.loss for h in hooks)
                loss = ce + bn_weight * bn
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if (step + 1) % max(1, steps // 10) == 0:
                    c, b = float(ce.detach()), float(bn.detach())
                    log.info("deepinversion %d/%d ce %.3f bn %.3f", step + 1, steps, c, b)
                    report(lo // chunk * steps + step + 1, -(-len(y_all) // chunk) * steps, f"synth ce {c:.3f}")
            out.append(x.detach().numpy())
    finally:
        for h in hooks:
            h.handle.remove()
        for p in teacher.parameters():
            p.requires_grad_(True)
    return np.concatenate(out).astype(np.float32), y_all
