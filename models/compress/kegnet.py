"""KegNet (Yoo et al., NeurIPS 2019): data-free windows from a class-conditional generator.

A generator ``G(y, z)`` turns a class ``y`` and a noise vector ``z`` into a window; it is
trained against the frozen teacher only, with three terms (the paper's):

* **classifier loss**: cross-entropy of the teacher on ``G(y, z)`` to ``y`` (the window must
  look like class ``y`` to the teacher);
* **decoder loss**: a decoder ``D`` recovers ``z`` from the window, ``||D(G(y, z)) - z||^2``,
  so different noise vectors give different windows (no mode collapse);
* **diversity loss**: ``exp(-mean_ij ||x_i - x_j|| * ||z_i - z_j||)`` over the batch, pushing
  windows apart in proportion to how far apart their noise vectors are.

The paper trains an ensemble of generators; this compact version trains ``n_generators``
(default 2) and draws windows from all of them. What the generator sees: the teacher's
weights and its outputs on generated windows, never a real window, and (unlike
DeepInversion) not the BN statistics either. :func:`synthesize` has DeepInversion's
signature, so the pipeline can use either (``Options.synth``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require
from edgevib.progress import Progress, null_progress

torch: Any = require("torch", extra="train", feature="KegNet synthesis")
nn: Any = torch.nn
log = logging.getLogger(__name__)
_COMP = "models.compress.kegnet"


class Generator(nn.Module):
    """``(one-hot y, z)`` -> window ``[N, 1, W]``: a dense layer to 32 positions, then x2
    upsampling + conv stages up to ``W`` (a power-of-two multiple of 32)."""

    def __init__(self, n_classes: int, window: int, z_dim: int = 16, ch: int = 32) -> None:
        super().__init__()
        ups = int(np.log2(window // 32))
        if window % 32 or 32 * 2 ** ups != window:
            raise CompressError(_COMP, f"window={window}", "use a window of 32 * 2^k samples (e.g. 2048)")
        self.n_classes, self.z_dim, self.ch = n_classes, z_dim, ch
        self.fc = nn.Linear(n_classes + z_dim, ch * 32)
        layers: list[Any] = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2), nn.Conv1d(ch, ch, 5, padding=2), nn.BatchNorm1d(ch), nn.ReLU()]
        layers.append(nn.Conv1d(ch, 1, 5, padding=2))
        self.body = nn.Sequential(*layers)

    def forward(self, y: Any, z: Any) -> Any:
        h = self.fc(torch.cat([nn.functional.one_hot(y, self.n_classes).float(), z], dim=1))
        return self.body(h.reshape(-1, self.ch, 32))


class Decoder(nn.Module):
    """Window -> estimate of the generator's noise vector ``z``."""

    def __init__(self, window: int, z_dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, 16, 64, stride=16, padding=24), nn.ReLU(), nn.AdaptiveAvgPool1d(16),
                                 nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, z_dim))

    def forward(self, x: Any) -> Any:
        x = x - x.mean(dim=-1, keepdim=True)
        return self.net(x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-6))


def diversity_loss(x: Any, z: Any) -> Any:
    """``exp(-mean_ij ||x_i - x_j|| * ||z_i - z_j||)`` (windows compared after RMS normalisation,
    since the teacher normalises every window itself). Both distances are per dimension (divided
    by the square root of the length): with raw distances of 2048-sample windows and 16-d noise
    the product is ~8 and ``exp`` saturates at ~0, leaving no gradient."""
    xn = x.reshape(len(x), -1)
    xn = xn / (xn.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-6)
    dx = torch.cdist(xn, xn) / np.sqrt(xn.shape[1])
    dz = torch.cdist(z, z) / np.sqrt(z.shape[1])
    return torch.exp(-(dx * dz).mean())


def train_generators(teacher: Any, *, n_generators: int = 2, steps: int = 300, batch: int = 40, z_dim: int = 16,
                     ch: int = 32, lr: float = 2e-3, decoder_weight: float = 1.0, diversity_weight: float = 1.0,
                     seed: int = 0, progress: Progress | None = None) -> list[Any]:
    """Train ``n_generators`` KegNet generators against the frozen ``teacher``; returns them."""
    if n_generators < 1 or steps < 1 or batch < 2:
        raise CompressError(_COMP, f"n_generators={n_generators}, steps={steps}, batch={batch}",
                            "use n_generators >= 1, steps >= 1, batch >= 2 (the diversity term needs pairs)")
    report = progress or null_progress
    teacher.eval()
    torch.manual_seed(seed)
    frozen = [p for p in teacher.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        gens = _train(teacher, n_generators, steps, batch, z_dim, ch, lr, decoder_weight, diversity_weight, report)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return gens


def _train(teacher: Any, n_generators: int, steps: int, batch: int, z_dim: int, ch: int, lr: float,
           decoder_weight: float, diversity_weight: float, report: Progress) -> list[Any]:
    n_classes, window = int(teacher.head[-1].out_features), int(teacher.window)
    gens = []
    for gi in range(n_generators):
        gen, dec = Generator(n_classes, window, z_dim, ch), Decoder(window, z_dim)
        opt = torch.optim.Adam(list(gen.parameters()) + list(dec.parameters()), lr=lr)
        for step in range(steps):
            y = torch.randint(0, n_classes, (batch,))
            z = torch.randn(batch, z_dim)
            x = gen(y, z)
            ce = nn.functional.cross_entropy(teacher(x), y)
            rec = (dec(x) - z).pow(2).mean()
            div = diversity_loss(x, z)
            loss = ce + decoder_weight * rec + diversity_weight * div
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % max(1, steps // 10) == 0:
                log.info("kegnet g%d %d/%d ce %.3f dec %.3f div %.3f", gi, step + 1, steps, float(ce.detach()), float(rec.detach()),
                         float(div.detach()))
                report(gi * steps + step + 1, n_generators * steps, f"kegnet ce {float(ce.detach()):.3f}")
        gens.append(gen.eval())
    return gens


def synthesize(teacher: Any, n_per_class: int = 32, *, steps: int = 300, n_generators: int = 2, ch: int = 32,
               seed: int = 0, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``x`` float32 [n_classes * n_per_class, 1, W] and classes ``y`` from trained
    KegNet generators (drawn from each generator in turn)."""
    if n_per_class < 1:
        raise CompressError(_COMP, f"n_per_class={n_per_class}", "use n_per_class >= 1")
    gens = train_generators(teacher, n_generators=n_generators, steps=steps, ch=ch, seed=seed, progress=progress)
    n_classes = int(teacher.head[-1].out_features)
    y = np.repeat(np.arange(n_classes), n_per_class)
    g = torch.Generator().manual_seed(seed)
    x = np.zeros((len(y), 1, int(teacher.window)), np.float32)
    with torch.no_grad():
        for gi, gen in enumerate(gens):  # window i from generator i mod n: every class from every generator
            idx = np.flatnonzero(np.arange(len(y)) % len(gens) == gi)
            for lo in range(0, len(idx), 64):
                part = idx[lo:lo + 64]
                x[part] = gen(torch.from_numpy(y[part]), torch.randn(len(part), gen.z_dim, generator=g)).numpy()
    return x, y
