"""ZAQ (zero-shot adversarial quantization, Liu et al., CVPR 2021), compact, for the WDCNN.

Two players, no real windows:

* a **generator** ``G(z)`` makes windows that *maximise* the disagreement between the
  full-precision network ``P`` and its quantized copy ``Q``: L1 between their outputs plus a
  feature-relation term (the batch Gram matrices of every conv block's output, normalised,
  compared between ``P`` and ``Q``: ZAQ's intermediate-level discrepancy);
* the **quantized network** ``Q`` *minimises* the same disagreement on those windows: its
  float "shadow" weights learn through int8 weight rounding with a straight-through
  estimator (per-channel symmetric int8, as ONNX Runtime quantizes them).

``Q`` starts from the DFQ-prepared network (:func:`edgevib.models.compress.dfq.dfq`: BN folded,
equalised, bias-corrected), and is exported by ``dfq.quantize_data_free`` (activation ranges
from the BN statistics). What ZAQ saw: the network's weights and BN statistics, and both
networks' outputs/features on generated windows; never a real window. Deviation: only weight
quantization is simulated while training (activation ranges are fixed by DFQ's statistics).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from edgevib.models.compress.errors import CompressError

from edgevib.extras import require
from edgevib.progress import Progress, null_progress

torch: Any = require("torch", extra="train", feature="zero-shot adversarial quantization")
nn: Any = torch.nn
log = logging.getLogger(__name__)
_COMP = "models.compress.zaq"


def _ste_quant(w: Any, per_channel: bool) -> Any:
    from edgevib.models.compress.dfq import fake_quant_weight

    return w + (fake_quant_weight(w, per_channel) - w).detach()


class _Features:
    """Forward hooks collecting every conv block's output."""

    def __init__(self, net: Any) -> None:
        self.out: list[Any] = []
        self.handles = [b.register_forward_hook(lambda _m, _i, o: self.out.append(o)) for b in net.blocks]

    def take(self) -> list[Any]:
        out, self.out = self.out, []
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def relation(f: Any) -> Any:
    """Row-normalised batch Gram matrix ``[B, B]`` of features ``f`` [B, ...]."""
    v = f.reshape(len(f), -1)
    g = v @ v.t()
    return g / (g.norm(dim=1, keepdim=True) + 1e-8)


def discrepancy(p_out: Any, q_out: Any, p_feat: list[Any], q_feat: list[Any], beta: float) -> Any:
    """ZAQ's two-level disagreement: output L1 (softmax) + ``beta`` * feature-relation MSE."""
    out = (torch.softmax(p_out, 1) - torch.softmax(q_out, 1)).abs().sum(1).mean()
    rel = sum(((relation(a) - relation(b)) ** 2).sum(1).mean() for a, b in zip(p_feat, q_feat, strict=True))
    return out + beta * rel


class Generator(nn.Module):
    """``z`` -> window [N, 1, W]: dense to 32 positions, then x2 upsampling + conv stages."""

    def __init__(self, window: int, z_dim: int = 32, ch: int = 32) -> None:
        super().__init__()
        from edgevib.models.compress.kegnet import Generator as _KG

        # KegNet's generator without the class input (a 1-class one-hot carries nothing)
        self.g, self.z_dim = _KG(1, window, z_dim, ch), z_dim

    def forward(self, z: Any) -> Any:
        return self.g(torch.zeros(len(z), dtype=torch.long), z)


def zaq(net: Any, config: Any = None, *, steps: int = 300, batch: int = 32, lr_q: float = 1e-4, lr_g: float = 1e-3,
        beta: float = 1.0, g_steps: int = 1, seed: int = 0,
        progress: Progress | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Adversarially fine-tune a DFQ-prepared copy of ``net`` for int8; returns ``(q_net, stats, info)``
    (``q_net`` float, ready for ``dfq.quantize_data_free``)."""
    from edgevib.models.compress import dfq

    if steps < 1 or batch < 2 or beta < 0:
        raise CompressError(_COMP, f"steps={steps}, batch={batch}, beta={beta}",
                            "use steps >= 1, batch >= 2 (relations need pairs), beta >= 0")
    cfg = config or dfq.DFQConfig()
    report = progress or null_progress
    torch.manual_seed(seed)
    p_net = copy.deepcopy(net).eval()
    for prm in p_net.parameters():
        prm.requires_grad_(False)
    q_net, stats = dfq.dfq(net, cfg)
    q_net.eval()  # BN layers are identities after folding; keep them (and dropout) in eval mode
    names = [n for n, prm in q_net.named_parameters() if n.endswith("weight") and prm.dim() > 1]
    shadow = dict(q_net.named_parameters())

    def q_forward(x: Any) -> Any:
        params = {n: (_ste_quant(shadow[n], cfg.per_channel) if n in names else shadow[n]) for n in shadow}
        return torch.func.functional_call(q_net, params, (x,))

    gen = Generator(int(net.window))
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr_g)
    # conv/dense weights and biases learn; the identity BNs left by folding stay identities
    layers = [m for m in q_net.modules() if isinstance(m, nn.Conv1d | nn.Linear)]
    opt_q = torch.optim.Adam([prm for m in layers for prm in m.parameters()], lr=lr_q)
    fp, fq = _Features(p_net), _Features(q_net)
    first = last = 0.0
    try:
        for step in range(steps):
            for _ in range(g_steps):  # generator: maximise the disagreement
                x = gen(torch.randn(batch, gen.z_dim))
                d = discrepancy(p_net(x), q_forward(x), fp.take(), fq.take(), beta)
                opt_g.zero_grad(set_to_none=True)
                (-d).backward()
                opt_g.step()
            x = gen(torch.randn(batch, gen.z_dim)).detach()  # quantized net: minimise it
            with torch.no_grad():
                p_out = p_net(x)
            p_feat = fp.take()
            d = discrepancy(p_out, q_forward(x), p_feat, fq.take(), beta)
            opt_q.zero_grad(set_to_none=True)
            d.backward()
            opt_q.step()
            last = float(d.detach())
            first = first or last
            if (step + 1) % max(1, steps // 10) == 0:
                log.info("zaq %d/%d disagreement %.4f", step + 1, steps, last)
                report(step + 1, steps, f"zaq d {last:.4f}")
    finally:
        fp.close()
        fq.close()
    info = {"saw": "weights, BN statistics, P/Q outputs on generated windows; no real window",
            "disagreement_first": first, "disagreement_last": last, "steps": steps}
    return q_net.eval(), stats, info
