"""Knowledge distillation (Hinton et al., 2015): a slim student learns from the teacher.

Loss = ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``; the
``T^2`` keeps the soft term's gradient scale independent of the temperature. With
``alpha = 1`` no labels are used (the data-free path distils on synthesised windows whose
"labels" are only the classes they were synthesised for).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.training import BatchFn, fit

from edgevib.extras import require
from edgevib.progress import Progress

torch: Any = require("torch", extra="train", feature="knowledge distillation")
F: Any = torch.nn.functional
log = logging.getLogger(__name__)
_COMP = "models.compress.distill"


def kd_loss(student_logits: Any, teacher_logits: Any, y: Any, *, temperature: float = 4.0,
            alpha: float = 0.7) -> Any:
    """Hinton's distillation loss on logits (teacher logits carry no gradient)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean") * t * t
    if alpha >= 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


def add_noise(x: Any, p: float, snr_lo: float, snr_hi: float, gen: Any) -> Any:
    """White Gaussian noise on a fraction ``p`` of the windows ``x`` [B, 1, W], at an SNR drawn
    uniformly in ``[snr_lo, snr_hi]`` dB relative to each window's own power."""
    b = x.shape[0]
    snr = snr_lo + (snr_hi - snr_lo) * torch.rand(b, 1, 1, generator=gen)
    on = (torch.rand(b, 1, 1, generator=gen) < p).float()
    power = x.pow(2).mean(dim=-1, keepdim=True)
    return x + on * torch.randn(x.shape, generator=gen) * torch.sqrt(power / 10 ** (snr / 10))


def mix(x: Any, a: float, rng: np.random.Generator) -> Any:
    """Function matching's inputs (Beyer et al., CVPR 2022): each window of ``x`` [B, 1, W]
    standardised (the CNN graph standardises its input, so gain and units do not weigh in the
    mix), then ``lam * x_i + (1 - lam) * x_perm(i)`` with ``lam ~ Beta(a, a)`` per window.

    >>> z = mix(torch.randn(4, 1, 64), 1.0, np.random.default_rng(0))
    >>> tuple(z.shape)
    (4, 1, 64)
    """
    b = x.shape[0]
    z = x - x.mean(dim=-1, keepdim=True)
    z = z / (z.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-6)
    lam = torch.from_numpy(rng.beta(a, a, size=(b, 1, 1)).astype(np.float32))
    return lam * z + (1 - lam) * z[torch.from_numpy(rng.permutation(b))]


def distill(student: Any, teacher: Any, batches: BatchFn, *, steps: int = 400, temperature: float = 4.0,
            alpha: float = 0.7, lr: float = 1e-3, seed: int = 0, bn_stats: bool = False,
            noise: tuple[float, float, float] | None = None, noisy_teacher: bool = False,
            mixup: float = 0.0, progress: Progress | None = None) -> Any:
    """Train ``student`` in place on ``batches`` to match ``teacher`` (kept in eval mode).

    ``bn_stats=False`` keeps the student's BN statistics (inherited from the teacher by
    pruning) fixed, which matters when batches are synthetic. ``noise = (p, snr_lo, snr_hi)``
    (noise-robust distillation): the student sees a noisy copy of a fraction ``p`` of the
    windows while the teacher's targets come from the clean ones, so the student learns what
    the teacher says about the clean signal from the noisy one. With ``noisy_teacher`` the
    teacher scores the same noisy copy the student sees (plain distillation on noise-augmented
    windows, as on the real-data path's augmented batches): the student learns what the teacher
    says about the noisy signal. ``mixup = a > 0`` (function matching): teacher and student see
    the same mix of two windows (:func:`mix`), so the student matches the teacher's function
    between the training windows too, not only on them; the mix has no label, so ``alpha`` must be 1.
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise CompressError(_COMP, f"temperature={temperature}, alpha={alpha}",
                            "use temperature > 0 (e.g. 4) and alpha in [0, 1] (e.g. 0.7)")
    if noise is not None and (not 0 <= noise[0] <= 1 or noise[1] > noise[2]):
        raise CompressError(_COMP, f"noise={noise}", "use (p in [0, 1], snr_lo <= snr_hi), e.g. (0.5, -6, 10)")
    if mixup < 0 or (mixup > 0 and alpha < 1):
        raise CompressError(_COMP, f"mixup={mixup} with alpha={alpha}",
                            "use mixup=0 (off) or mixup > 0 (e.g. 1) with alpha=1: a mix of two windows has no label")
    teacher.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed + 2)

    def loss(net: Any, x: Any, y: Any) -> Any:
        if mixup > 0:
            x = mix(x, mixup, rng)
        xs = x if noise is None else add_noise(x, *noise, gen)
        with torch.no_grad():
            t = teacher(xs if noisy_teacher else x)
        return kd_loss(net(xs), t, y, temperature=temperature, alpha=alpha)

    return fit(student, batches, loss, steps=steps, lr=lr, seed=seed, bn_stats=bn_stats, progress=progress,
               label="kd")


def finetune(net: Any, batches: BatchFn, *, steps: int = 400, lr: float = 1e-3, seed: int = 0,
             progress: Progress | None = None) -> Any:
    """Plain fine-tuning on labels (the recipe without ``kd``; real windows)."""
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    return fit(net, batches, lambda n, x, y: ce(n(x), y), steps=steps, lr=lr, seed=seed, bn_stats=True,
               progress=progress, label="finetune")
