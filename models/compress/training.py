"""A small training loop shared by sparsity training, fine-tuning and distillation.

The CNN trainer (:func:`edgevib.models.cnn.train`) builds its own network; compression
must keep training a given (pruned) network, so this loop takes the ``nn.Module`` and a
loss callable. Batches come from the same augmenter as the CNN's training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from edgevib.models.augment import AugmentConfig, Augmenter, segments_from_windows
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require
from edgevib.progress import Progress, null_progress

torch: Any = require("torch", extra="train", feature="model compression")
log = logging.getLogger(__name__)
_COMP = "models.compress.training"
BatchFn = Callable[[int], tuple[Any, Any]]
LossFn = Callable[[Any, Any, Any], Any]


def window_batches(ws: Any, *, seed: int = 0, augment: AugmentConfig | None = None) -> BatchFn:
    """Augmented, class-balanced batches ``(x [B,1,W], y [B])`` cut from a WindowSet's segments."""
    if len(ws) == 0:
        raise CompressError(_COMP, "empty WindowSet", "pass training windows (split.time_split(...)[0])")
    segs, labels = segments_from_windows(ws.x, ws.recording, ws.start, ws.y)
    aug = Augmenter(segs, labels, window=ws.window, config=augment or AugmentConfig(), seed=seed, fs=ws.fs)
    return aug.batch


def tensor_batches(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> BatchFn:
    """Random batches (with replacement) from fixed windows ``x [N,1,W]`` (e.g. synthesised ones)."""
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))

    def batch(size: int) -> tuple[Any, Any]:
        idx = torch.from_numpy(rng.integers(0, len(xt), size))
        # random gain and polarity: the graph normalises, so this only varies the crop's sign
        sign = torch.from_numpy(np.where(rng.random(size) < 0.5, -1.0, 1.0).astype(np.float32))
        return xt[idx] * sign[:, None, None], yt[idx]

    return batch


def freeze_bn_stats(net: Any) -> None:
    """Keep batch-norm running statistics fixed (gamma/beta still learn): a few hundred steps on
    a small or synthetic batch stream would otherwise overwrite statistics learnt on all data."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def fit(net: Any, batches: BatchFn, loss_fn: LossFn, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 1e-4, seed: int = 0, bn_stats: bool = True, progress: Progress | None = None,
        label: str = "fit", after_step: Callable[[Any, float], None] | None = None,
        groups: list[dict[str, Any]] | None = None) -> Any:
    """Train ``net`` in place for ``steps`` AdamW steps (cosine decay); ``loss_fn(net, x, y)``.

    ``after_step(net, lr)`` runs after every optimizer step (e.g. a proximal L1 shrink) with
    the first parameter group's current learning rate; ``groups`` are AdamW parameter groups
    (default: all of ``net`` at ``lr``).
    """
    if steps < 1 or batch_size < 1:
        raise CompressError(_COMP, f"steps={steps}, batch_size={batch_size}", "use positive numbers")
    report = progress or null_progress
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(groups or net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    every = max(1, steps // 20)
    run = 0.0
    for step in range(steps):
        net.train()
        if not bn_stats:
            freeze_bn_stats(net)
        x, y = batches(batch_size)
        loss = loss_fn(net, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(net, float(sched.get_last_lr()[0]))
        sched.step()
        run += float(loss.detach())
        if (step + 1) % every == 0 or step + 1 == steps:
            log.info("%s step %d/%d loss %.4f", label, step + 1, steps, run / every)
            report(step + 1, steps, f"{label} loss {run / every:.3f}")
            run = 0.0
    return net.eval()
