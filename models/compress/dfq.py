"""Data-free quantization (DFQ, Nagel et al., ICCV 2019) for the WDCNN: INT8 with no windows.

Four steps, all from the weights and batch-norm statistics alone:

1. :func:`fold_bn`: fold every prunable BN into the conv/dense layer before it; the BN
   becomes the identity. Each pre-ReLU channel ``c`` keeps what its BN said about it:
   mean ``beta_c`` and spread ``|gamma_c|`` under the training data (:class:`ChannelStats`).
2. :func:`equalize` (cross-layer equalisation): ReLU, max pooling and average pooling are
   positively homogeneous, so dividing output channel ``c`` of a layer by ``s_c`` and
   multiplying the next layer's input column(s) ``c`` by ``s_c`` changes nothing in float.
   ``s_c = sqrt(r1_c / r2_c)`` (``r1``/``r2`` the channel's weight range in the two layers)
   gives both the same range, so per-tensor and per-channel int8 grids fit both.
3. :func:`absorb_high_bias`: a channel whose pre-activation is ``>= h_c = max(0, beta_c -
   k |gamma_c|)`` almost always passes ``h_c`` through ReLU unchanged; moving ``h_c`` into the
   next layer's bias shrinks the activation range. Approximate where ``x < h_c`` and at the
   next conv's zero-padded edges.
4. :func:`correct_bias` (analytical bias correction): int8 weight rounding ``eps = W_q - W``
   shifts a layer's output by ``eps @ E[input]``; ``E[input]`` comes from the BN statistics
   (``E[relu(N(beta, gamma^2))]``, through the max pool as the max of two independent draws)
   and is subtracted from the bias.

Then :func:`quantize_data_free` writes ONNX Runtime's static QDQ INT8 model with activation
ranges set from the same statistics (``beta +- n |gamma|`` per channel, the input
normalisation's output at ``+-input_range`` RMS) through ONNX Runtime's calibration cache, so
no window, real or synthetic, is ever run. The result has the teacher's shape (no pruning).

>>> import torch
>>> from edgevib.models.cnn import build_wdcnn
>>> net = build_wdcnn(3, (8, 8, 8, 8, 8), hidden=12, window=1024, pool_out=2, envelope=0).eval()
>>> x = torch.randn(4, 1, 1024)
>>> folded, stats = fold_bn(net)
>>> scales = equalize(folded, stats)
>>> bool(torch.allclose(net(x), folded(x), atol=1e-4))
True
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.slimming import Unit, units

from edgevib.extras import require

torch: Any = require("torch", extra="train", feature="data-free quantization")
log = logging.getLogger(__name__)
_COMP = "models.compress.dfq"


@dataclass(frozen=True)
class DFQConfig:
    """Knobs of DFQ; the defaults are the paper's where it gives one."""

    cle_iters: int = 20  # sweeps over all layer pairs (the scales converge in a few)
    absorb: bool = True
    absorb_sigmas: float = 3.0  # h = max(0, beta - 3 |gamma|), as in the paper
    bias_correct: bool = True
    range_sigmas: float = 6.0  # activation range beta +- 6 |gamma| per channel
    input_range: float = 8.0  # the graph's normalised input has RMS 1; +-8 RMS covers bearing impacts
    per_channel: bool = True  # int8 weight scale per output channel (False: one per tensor, where CLE matters)

    def __post_init__(self) -> None:
        if self.cle_iters < 0 or self.absorb_sigmas < 0 or self.range_sigmas <= 0 or self.input_range <= 0:
            raise CompressError(_COMP, f"config {self}", "use cle_iters >= 0, absorb_sigmas >= 0, "
                                "range_sigmas > 0 and input_range > 0 (e.g. the defaults)")


@dataclass
class ChannelStats:
    """Pre-ReLU mean and spread per output channel of one unit's producer (numpy float64)."""

    mu: np.ndarray
    sd: np.ndarray


def _check(net: Any) -> list[Unit]:
    if getattr(net, "envelope", None) is not None:
        raise CompressError(_COMP, "a WDCNN with the envelope-spectrum branch",
                            "DFQ handles the plain WDCNN (models.cnn.train(..., envelope=0))")
    return units(net)


def fold_bn(net: Any) -> tuple[Any, list[ChannelStats]]:
    """A copy of ``net`` with every unit's BN folded into its producer (BN left as identity)."""
    work = copy.deepcopy(net).eval()
    stats = []
    with torch.no_grad():
        for u in _check(work):
            bn, p = u.bn, u.producer
            a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shape = (-1,) + (1,) * (p.weight.dim() - 1)
            p.weight.mul_(a.reshape(shape))
            p.bias.copy_(a * (p.bias - bn.running_mean) + bn.bias)
            stats.append(ChannelStats(bn.bias.double().numpy().copy(), bn.weight.abs().double().numpy().copy()))
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return work, stats


def _cols(u: Unit, c: int) -> slice:
    return slice(c * u.group, (c + 1) * u.group)


def _consumer_cols(u: Unit) -> Any:
    """Consumer weights as [out, channels, group * taps] (a view): channel ``c``'s columns."""
    w = u.consumer.weight
    if w.dim() == 3:  # conv [out, in, k]: group is 1
        return w
    return w[:, :u.bn.num_features * u.group].reshape(w.shape[0], u.bn.num_features, u.group)


def equalize(net: Any, stats: list[ChannelStats], iters: int = 20, tol: float = 1e-6) -> list[np.ndarray]:
    """Cross-layer equalisation of a folded net (in place); the total scale per unit channel."""
    us = _check(net)
    total = [np.ones(u.bn.num_features) for u in us]
    with torch.no_grad():
        for it in range(iters):
            change = 0.0
            for i, u in enumerate(us):
                w1 = u.producer.weight
                r1 = w1.reshape(w1.shape[0], -1).abs().amax(dim=1).double().numpy()
                r2 = _consumer_cols(u).abs().amax(dim=(0, 2)).double().numpy()
                ok = (r1 > 0) & (r2 > 0)
                s = np.ones_like(r1)
                s[ok] = np.sqrt(r1[ok] / r2[ok])
                st = torch.from_numpy(s).float()
                w1.div_(st.reshape((-1,) + (1,) * (w1.dim() - 1)))
                u.producer.bias.div_(st)
                _consumer_cols(u).mul_(st[None, :, None])
                stats[i].mu /= s
                stats[i].sd /= s
                total[i] *= s
                change = max(change, float(np.max(np.abs(np.log(s)))))
            if change < tol:
                log.info("dfq: equalisation converged after %d sweeps", it + 1)
                break
    return total


def absorb_high_bias(net: Any, stats: list[ChannelStats], sigmas: float = 3.0) -> list[np.ndarray]:
    """Move ``h = max(0, mu - sigmas * sd)`` of each channel into the consumer's bias (in place)."""
    out = []
    with torch.no_grad():
        for u, st in zip(_check(net), stats, strict=True):
            h = np.maximum(0.0, st.mu - sigmas * st.sd)
            ht = torch.from_numpy(h).float()
            u.producer.bias.sub_(ht)
            u.consumer.bias.add_((_consumer_cols(u) * ht[None, :, None]).sum(dim=(1, 2)))
            st.mu = st.mu - h
            out.append(h)
    return out


def mean_relu(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``E[relu(Z)]``, ``Z ~ N(mu, sd^2)``."""
    sd = np.maximum(sd, 1e-12)
    z = mu / sd
    return mu * scipy.stats.norm.cdf(z) + sd * scipy.stats.norm.pdf(z)


def mean_relu_max2(mu: np.ndarray, sd: np.ndarray, n: int = 801) -> np.ndarray:
    """``E[relu(max(Z1, Z2))]`` for independent ``Z1, Z2 ~ N(mu, sd^2)`` (ReLU then max pool of 2)."""
    t = np.linspace(-8.0, 8.0, n)
    dens = 2 * scipy.stats.norm.pdf(t) * scipy.stats.norm.cdf(t)  # standardised max of two
    m = mu[:, None] + np.maximum(sd, 1e-12)[:, None] * t[None, :]
    return np.trapezoid(np.maximum(m, 0.0) * dens[None, :], t, axis=1)


def fake_quant_weight(w: Any, per_channel: bool = True) -> Any:
    """Symmetric int8 (scale = max|w| / 127 per output channel, or per tensor), as ONNX Runtime
    quantizes weights."""
    flat = w.reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1) if per_channel else flat.abs().amax().expand(flat.shape[0])
    scale = (amax / 127.0).clamp_min(1e-12)
    q = torch.clamp(torch.round(flat / scale[:, None]), -127, 127) * scale[:, None]
    return q.reshape(w.shape)


def input_means(net: Any, stats: list[ChannelStats]) -> list[np.ndarray | None]:
    """``E[input]`` per input channel of every producer and of the last layer (None: zero by the
    graph's per-window mean removal, the first conv)."""
    us = _check(net)
    out: list[np.ndarray | None] = [None]
    for i, (u, st) in enumerate(zip(us, stats, strict=True)):
        pooled = i < len(us) - 1  # conv blocks end in a max pool of 2; the dense head does not
        e = mean_relu_max2(st.mu, st.sd) if pooled else mean_relu(st.mu, st.sd)
        out.append(np.repeat(e, u.group))
    return out


def correct_bias(net: Any, stats: list[ChannelStats], per_channel: bool = True) -> list[float]:
    """Subtract each layer's expected int8 weight-rounding shift from its bias (in place)."""
    us = _check(net)
    layers = [u.producer for u in us] + [us[-1].consumer]
    shifts = []
    with torch.no_grad():
        for layer, e in zip(layers, input_means(net, stats), strict=True):
            if e is None:
                shifts.append(0.0)
                continue
            eps = fake_quant_weight(layer.weight, per_channel) - layer.weight
            ev = torch.from_numpy(e).float()
            # only the columns the channels feed (an envelope branch is rejected by _check)
            eps = eps.sum(dim=2) if eps.dim() == 3 else eps[:, :len(ev)]
            delta = eps @ ev
            layer.bias.sub_(delta)
            shifts.append(float(delta.abs().max()))
    return shifts


def dfq(net: Any, config: DFQConfig | None = None) -> tuple[Any, list[ChannelStats]]:
    """Fold, equalise, absorb and bias-correct a copy of ``net``; returns it and its channel stats."""
    cfg = config or DFQConfig()
    folded, stats = fold_bn(net)
    equalize(folded, stats, cfg.cle_iters)
    if cfg.absorb:
        absorb_high_bias(folded, stats, cfg.absorb_sigmas)
    if cfg.bias_correct:
        correct_bias(folded, stats, cfg.per_channel)
    return folded, stats


def layer_ranges(net: Any, stats: list[ChannelStats], sigmas: float) -> list[tuple[float, float]]:
    """Output range of every conv/dense layer in forward order (the logits last), from statistics."""
    us = _check(net)
    out = [(float(np.min(s.mu - sigmas * s.sd)), float(np.max(s.mu + sigmas * s.sd))) for s in stats]
    last, st = us[-1].consumer, stats[-1]
    e, e2 = mean_relu(st.mu, st.sd), _mean_relu_sq(st.mu, st.sd)
    w = last.weight.detach().double().numpy()
    mean = last.bias.detach().double().numpy() + w @ e
    sd = np.sqrt((w ** 2) @ np.maximum(e2 - e ** 2, 0.0))  # independent hidden units
    out.append((float(np.min(mean - sigmas * sd)), float(np.max(mean + sigmas * sd))))
    return out


def _mean_relu_sq(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``E[relu(Z)^2]``, ``Z ~ N(mu, sd^2)``."""
    sd = np.maximum(sd, 1e-12)
    z = mu / sd
    return (mu ** 2 + sd ** 2) * scipy.stats.norm.cdf(z) + mu * sd * scipy.stats.norm.pdf(z)


_PASS = {"MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Dropout",
         "BatchNormalization"}  # BatchNormalization: only the identity left by fold_bn


def tensor_ranges(graph: Any, layers: list[tuple[float, float]], input_range: float) -> dict[str, tuple[float, float]]:
    """Range of every tensor the INT8 graph needs, propagated in node order: Conv/Gemm outputs
    from ``layers`` (forward order), the input normalisation's Div at ``+-input_range``."""
    ranges: dict[str, tuple[float, float]] = {}
    k = 0
    for node in graph.node:
        op, src = node.op_type, (ranges.get(node.input[0]) if node.input else None)
        if op in ("Conv", "Gemm"):
            if k >= len(layers):
                raise CompressError(_COMP, f"graph with more than {len(layers)} Conv/Gemm nodes",
                                    "quantize_data_free takes the ONNX export of the same (plain WDCNN) net")
            r = layers[k]
            k += 1
        elif op == "Div" and k == 0:
            r = (-input_range, input_range)
        elif op == "Relu" and src is not None:
            r = (max(src[0], 0.0), max(src[1], 0.0))
        elif op in _PASS and src is not None:
            r = src
        elif op == "Softmax":
            r = (0.0, 1.0)
        else:
            continue
        lo, hi = r
        ranges[node.output[0]] = (lo, hi if hi > lo else lo + 1e-6)
    if k != len(layers):
        raise CompressError(_COMP, f"graph with {k} Conv/Gemm nodes for {len(layers)} layers",
                            "quantize_data_free takes the ONNX export of the same (plain WDCNN) net")
    return ranges


def quantize_data_free(proto: Any, net: Any, stats: list[ChannelStats], config: DFQConfig | None = None) -> Any:
    """Static QDQ INT8 of ``proto`` (the ONNX export of ``net``) with ranges from ``stats``, no windows."""
    from edgevib.models.compress import quantize

    cfg = config or DFQConfig()
    q, onnx = quantize.q, quantize.onnx
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    layers = layer_ranges(net, stats, cfg.range_sigmas)
    with tempfile.TemporaryDirectory() as d:
        pre, meta = quantize._source(proto, Path(d))
        ranges = tensor_ranges(onnx.load(str(pre)).graph, layers, cfg.input_range)
        data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
        cache = Path(d) / "ranges.json"
        save_tensors_data(TensorsData(q.CalibrationMethod.MinMax, data), cache)
        out = Path(d) / "int8.onnx"
        q.quantize_static(str(pre), str(out), None, quant_format=q.QuantFormat.QDQ, per_channel=cfg.per_channel,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          op_types_to_quantize=quantize.OPS, calibrate_method=q.CalibrationMethod.MinMax,
                          calibration_cache_path=str(cache))
        return quantize._finish(out, meta, "dfq")
