"""Few-shot site adaptation of the fault-type model (issue 16): one interface, several methods.

A site (a machine the fleet model never saw) labels a few recordings. An *adapter* turns the
fleet model, its training data (kept in the cloud: the replay set) and the site's labelled
windows into a model for that site::

    adapt(fleet: Fleet, labelled: FeatureSet, *, seed: int) -> Adapted

found by name in :data:`ADAPTERS` (:func:`get`). Every adapted model has ``arch``,
``predict_proba(orders [N, 20]) -> float32 [N, 4]`` and ``to_onnx()`` with the same two-input
contract as the fleet model (``x`` [N, 1, W] unused, ``orders`` [N, 20]; metadata
``edgevib.aux_input = edgevib.orders/1``), so the agent runs it unchanged.

Methods:

``finetune``
    Plain fine-tuning of the fleet logistic regression: gradient descent warm-started at the
    fleet weights, on the replay set plus the site's windows. Replay rather than an L2 pull
    towards the fleet weights: the cloud keeps the fleet data anyway, and a site usually shows
    only some classes (no ball fault on three of the four rigs), so an L2 pull would leave the
    missing classes' logits free to drift while replay keeps them anchored to real examples.
    The site's windows form their own (site, class) cells, each weighted :data:`SITE_WEIGHT`
    times a fleet cell (fixed a priori: the site as a whole weighs about as much as the fleet).
``mlp``
    A small MLP (20 -> 32 -> 32 -> 4) trained on the same replay + site windows: the plain
    baseline of the two methods below, which need a network with layers.
``ke``
    Knowledge Evolution (Taha et al., CVPR 2021) on that MLP: kernel-level split (KELS), the
    reset hypothesis re-initialised each generation, then the slim fit network is extracted
    (``ke-dense``: the last generation's full network).
``rkd``
    The MLP trained with relational knowledge distillation from the fleet model (Park et al.,
    CVPR 2019): distance-wise and angle-wise losses between the fleet model's logits and the
    student's penultimate embedding on replay windows, a regulariser beside the
    cross-entropy.

Torch is imported only inside the functions that train (the edge install has none); the
adapted models themselves predict with numpy.

>>> get("nope")
Traceback (most recent call last):
...
edgevib.models.errors.ModelsError: models.adapt: unknown adaptation method 'nope'; fix: use one of ['finetune', 'finetune-sp', 'ke', 'ke-dense', 'mlp', 'rkd']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from edgevib.models.errors import ModelsError
from edgevib.models.faulttype import (
    CLASSES,
    WINDOW,
    FaultTypeModel,
    FeatureSet,
    cell_weights,
    two_input_graph,
)

_COMP = "models.adapt"
SITE_WEIGHT = 4.0  # a site (rig, class) cell weighs as much as four fleet cells (3 rigs + simulation)
HIDDEN = (32, 32)
F64 = npt.NDArray[np.float64]


class Adapted(Protocol):
    arch: str

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]: ...

    def to_onnx(self, window: int = WINDOW) -> object: ...


@dataclass
class Fleet:
    """The running fleet model and the data it was trained on (the replay set)."""

    model: FaultTypeModel
    data: FeatureSet


def site_set(fleet: Fleet, labelled: FeatureSet, site_weight: float = SITE_WEIGHT
             ) -> tuple[F64, npt.NDArray[np.int64], F64]:
    """Replay + site windows and their weights: equal weight per fleet (rig, class) cell and
    ``site_weight`` per site cell (the site's windows form their own cells whatever rig name
    they carry)."""
    w_fleet = cell_weights(fleet.data.y, fleet.data.rig)
    x, y, w = [np.asarray(fleet.data.x, np.float64)], [fleet.data.y], [w_fleet]
    if len(labelled.y):
        x.append(np.asarray(labelled.x, np.float64))
        y.append(labelled.y)
        w.append(site_weight * cell_weights(labelled.y, np.full(len(labelled.y), "site")))
    return np.concatenate(x), np.concatenate(y).astype(np.int64), np.concatenate(w)


# -- plain fine-tuning of the logistic regression ------------------------------------------------------

def finetune(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, iters: int = 600, lr: float = 0.5,
             l2: float = 1e-2, site_weight: float = SITE_WEIGHT, l2sp: float = 0.0) -> FaultTypeModel:
    """Continue the fleet model's gradient descent on replay + site windows (deterministic;
    ``seed`` is unused). No labelled window: the fleet model itself. The standardisation and the
    temperature stay the fleet model's (too few site windows to refit either). ``l2sp`` > 0 adds
    the L2-SP penalty ``l2sp / 2 * ||theta - theta_fleet||^2`` (Li et al., ICML 2018) on weights
    and biases, on top of the replay (``finetune-sp``)."""
    m = fleet.model
    if not len(labelled.y):
        return m
    x, y, w = site_set(fleet, labelled, site_weight)
    z = (x - m.mean) / m.scale
    onehot = np.eye(len(CLASSES))[y]
    w0, b0 = m.weight, m.bias
    wt, b = m.weight.copy(), m.bias.copy()
    wn = w / w.sum()
    for _ in range(iters):
        p = np.exp(z @ wt + b - (z @ wt + b).max(axis=1, keepdims=True))
        g = (p / p.sum(axis=1, keepdims=True) - onehot) * wn[:, None]
        wt -= lr * (z.T @ g + l2 * wt + l2sp * (wt - w0))
        b -= lr * (g.sum(axis=0) + l2sp * (b - b0))
    return FaultTypeModel(m.mean, m.scale, wt, b, m.temperature,
                          arch="faulttype-lr+finetune" + ("-sp" if l2sp else ""))


L2SP = 0.1  # finetune-sp's pull to the fleet weights: fixed before its first run (10x the decay l2)


def finetune_sp(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, **opts: Any) -> FaultTypeModel:
    """Fine-tuning with replay and the L2-SP pull to the fleet weights (``l2sp`` = :data:`L2SP`)."""
    return finetune(fleet, labelled, seed=seed, **{"l2sp": L2SP, **opts})


# -- the MLP student (numpy inference, ONNX export) ------------------------------------------------------

@dataclass
class MLPModel:
    """Standardisation + dense layers with ReLU between them; ``layers[i] = (W [out, in], b [out])``."""

    mean: F64
    scale: F64
    layers: list[tuple[F64, F64]]
    arch: str = "faulttype-mlp"
    info: dict[str, Any] = field(default_factory=dict)

    def hidden(self, x: npt.ArrayLike) -> F64:
        """The penultimate activation (the embedding RKD works on)."""
        h = (np.asarray(x, np.float64) - self.mean) / self.scale
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w.T + b, 0.0)
        return np.asarray(h)

    def logits(self, x: npt.ArrayLike) -> F64:
        w, b = self.layers[-1]
        return np.asarray(self.hidden(x) @ w.T + b)

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        z = self.logits(x)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def to_onnx(self, window: int = WINDOW) -> object:
        """ONNX graph: inputs ``x`` [N,1,W] (unused) and ``orders`` [N,F]; output ``probs`` [N,C]."""
        from edgevib.extras import require

        onnx = require("onnx", extra="train", feature="exporting an adapted fault-type model")
        h = onnx.helper
        arr = onnx.numpy_helper.from_array
        inits = [arr(self.mean.astype(np.float32), "mean"), arr(self.scale.astype(np.float32), "scale")]
        nodes = [h.make_node("Sub", ["orders", "mean"], ["centred"]), h.make_node("Div", ["centred", "scale"], ["h0"])]
        cur = "h0"
        for i, (w, b) in enumerate(self.layers):
            inits += [arr(np.ascontiguousarray(w.T).astype(np.float32), f"w{i}"), arr(b.astype(np.float32), f"b{i}")]
            nodes += [h.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]), h.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
            cur = f"a{i}"
            if i < len(self.layers) - 1:
                nodes.append(h.make_node("Relu", [cur], [f"r{i}"]))
                cur = f"r{i}"
        nodes.append(h.make_node("Softmax", [cur], ["probs"], axis=1))
        f, c = self.layers[0][0].shape[1], self.layers[-1][0].shape[0]
        return two_input_graph(onnx, nodes, inits, "faulttype_mlp", f, c, window)


def build_mlp(sizes: Sequence[int], seed: int) -> Any:
    """A torch ``Sequential`` of Linear/ReLU with PyTorch's default initialisation, seeded."""
    import torch

    torch.manual_seed(seed)
    mods: list[Any] = []
    for i in range(len(sizes) - 1):
        mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods).double()


def _linears(net: Any) -> list[Any]:
    import torch

    return [m for m in net if isinstance(m, torch.nn.Linear)]


def to_model(net: Any, mean: F64, scale: F64, arch: str, **info: Any) -> MLPModel:
    """The numpy model of a torch MLP."""
    layers = [(lin.weight.detach().cpu().numpy().astype(np.float64).copy(),
               lin.bias.detach().cpu().numpy().astype(np.float64).copy()) for lin in _linears(net)]
    return MLPModel(np.asarray(mean, np.float64), np.asarray(scale, np.float64), layers, arch, dict(info))


Extra = Callable[[Any, int], Any]  # (net, step) -> additional loss tensor


def train_mlp(net: Any, z: F64, y: npt.NDArray[np.int64], w: F64, *, steps: int = 300, lr: float = 1e-2,
              weight_decay: float = 1e-4, extra: Extra | None = None) -> Any:
    """Full-batch Adam on the weighted cross-entropy of standardised inputs ``z`` (+ ``extra``).

    Runs on one torch thread (restored afterwards): the tensors are a few thousand x 32, too
    small for intra-op threads to pay, and on a busy 2-core host torch's default two threads
    made the retrain worker's ``rkd`` run 5x slower (50 s vs 11 s, 300 steps) than one."""
    import torch

    zt, yt = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(y)
    wt = torch.as_tensor(w / w.sum(), dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            opt.zero_grad()
            loss = (torch.nn.functional.cross_entropy(net(zt), yt, reduction="none") * wt).sum()
            if extra is not None:
                loss = loss + extra(net, step)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net


def _sizes(f: int) -> list[int]:
    return [f, *HIDDEN, len(CLASSES)]


def mlp(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, steps: int = 300,
        site_weight: float = SITE_WEIGHT) -> MLPModel:
    """The MLP trained on replay + site windows (the baseline of ``ke`` and ``rkd``)."""
    x, y, w = site_set(fleet, labelled, site_weight)
    m = fleet.model
    net = train_mlp(build_mlp(_sizes(x.shape[1]), seed), (x - m.mean) / m.scale, y, w, steps=steps)
    return to_model(net, m.mean, m.scale, "faulttype-mlp+site", n_site_windows=len(labelled.y))


# -- Knowledge Evolution (Taha et al., CVPR 2021) ------------------------------------------------------

@dataclass(frozen=True)
class LayerSplit:
    """KELS split of one dense layer: the fit hypothesis is ``W[:n_out, :n_in]`` and ``b[:n_out]``."""

    n_out: int
    n_in: int
    out_features: int
    in_features: int

    def mask(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Binary masks (weight [out, in], bias [out]); True = fit hypothesis."""
        mw = np.zeros((self.out_features, self.in_features), bool)
        mw[:self.n_out, :self.n_in] = True
        mb = np.zeros(self.out_features, bool)
        mb[:self.n_out] = True
        return mw, mb


def kels(sizes: Sequence[int], split_rate: float) -> list[LayerSplit]:
    """Kernel-level convolutional-aware splitting for dense layers ``sizes[0] -> ... -> sizes[-1]``.

    Each layer's fit hypothesis is its first ``ceil(s_f * out)`` kernels (output neurons), each
    with only its first ``ceil(s_f * in)`` incoming weights, so fit neurons read fit neurons
    only. As in the paper's code, the first layer keeps every input (the network's input is
    not split) and the last layer every output (the classes)."""
    if not 0.0 < split_rate <= 1.0:
        raise ModelsError(_COMP, f"split_rate={split_rate}", "use a fraction in (0, 1], e.g. 0.5")
    out = []
    last = len(sizes) - 2
    for i in range(len(sizes) - 1):
        n_in = sizes[i] if i == 0 else math.ceil(split_rate * sizes[i])
        n_out = sizes[i + 1] if i == last else math.ceil(split_rate * sizes[i + 1])
        out.append(LayerSplit(n_out, n_in, sizes[i + 1], sizes[i]))
    return out


def reset_hypothesis(net: Any, splits: Sequence[LayerSplit], seed: int) -> Any:
    """Re-initialise the reset hypothesis (in place, PyTorch's default init, seeded); the fit
    hypothesis keeps its weights bit for bit."""
    import torch

    fresh = build_mlp([splits[0].in_features, *[s.out_features for s in splits]], seed)
    with torch.no_grad():
        for lin, new, s in zip(_linears(net), _linears(fresh), splits, strict=True):
            mw, mb = (torch.as_tensor(m) for m in s.mask())
            lin.weight.copy_(torch.where(mw, lin.weight, new.weight))
            lin.bias.copy_(torch.where(mb, lin.bias, new.bias))
    return net


def masked(model: MLPModel, splits: Sequence[LayerSplit]) -> MLPModel:
    """The full network with the reset hypothesis zeroed: ``M * N`` in the paper's notation."""
    layers = []
    for (w, b), s in zip(model.layers, splits, strict=True):
        mw, mb = s.mask()
        layers.append((w * mw, b * mb))
    return MLPModel(model.mean, model.scale, layers, model.arch, dict(model.info))


def extract_slim(model: MLPModel, splits: Sequence[LayerSplit]) -> MLPModel:
    """The slim fit network: only the fit hypothesis's weights, as a smaller dense MLP."""
    layers = [(w[:s.n_out, :s.n_in].copy(), b[:s.n_out].copy()) for (w, b), s in zip(model.layers, splits, strict=True)]
    return MLPModel(model.mean, model.scale, layers, model.arch + "-slim", dict(model.info))


def knowledge_evolution(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, generations: int = 5,
                        split_rate: float = 0.5, steps: int = 300, site_weight: float = SITE_WEIGHT
                        ) -> tuple[MLPModel, list[LayerSplit]]:
    """Train ``generations`` generations (the first from scratch, each next after resetting the
    reset hypothesis); the last generation's dense network and its split."""
    x, y, w = site_set(fleet, labelled, site_weight)
    m = fleet.model
    z = (x - m.mean) / m.scale
    sizes = _sizes(x.shape[1])
    splits = kels(sizes, split_rate)
    net = build_mlp(sizes, seed)
    for g in range(generations):
        if g:
            reset_hypothesis(net, splits, seed * 1000 + g)
        train_mlp(net, z, y, w, steps=steps)
    return to_model(net, m.mean, m.scale, "faulttype-mlp+ke", generations=generations, split_rate=split_rate,
                    n_site_windows=len(labelled.y)), splits


def ke(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, **opts: Any) -> MLPModel:
    """Knowledge Evolution; returns the extracted slim fit network."""
    dense, splits = knowledge_evolution(fleet, labelled, seed=seed, **opts)
    return extract_slim(dense, splits)


def ke_dense(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, **opts: Any) -> MLPModel:
    """Knowledge Evolution; returns the last generation's dense network."""
    return knowledge_evolution(fleet, labelled, seed=seed, **opts)[0]


# -- relational knowledge distillation (Park et al., CVPR 2019) ------------------------------------------

def huber(d: Any) -> Any:
    """The paper's Huber loss l_delta (delta = 1): 0.5 d^2 where |d| <= 1, else |d| - 0.5."""
    import torch

    a = d.abs()
    return torch.where(a <= 1.0, 0.5 * d * d, a - 0.5)


def _pdist(e: Any) -> Any:
    diff = e[:, None, :] - e[None, :, :]
    return (diff * diff).sum(-1).clamp_min(1e-24).sqrt()


def rkd_distance(student: Any, teacher: Any) -> Any:
    """Distance-wise loss: mean over ordered pairs i != j of l_delta(||t_i - t_j|| / mu_t -
    ||s_i - s_j|| / mu_s), mu the mean distance over those pairs (paper eq. 4-5; the sum over
    pairs is taken as a mean)."""
    import torch

    n = student.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    ds, dt = _pdist(student)[off], _pdist(teacher)[off]
    return huber(dt / dt.mean() - ds / ds.mean()).mean()


def _cosines(e: Any) -> Any:
    """cos[i, j, k] = <e_ij, e_kj>, e_ij = (t_i - t_j) / ||t_i - t_j||: the angle at vertex j."""
    import torch

    v = e[:, None, :] - e[None, :, :]  # v[i, j] = t_i - t_j
    u = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("ijd,kjd->ijk", u, u)


def rkd_angle(student: Any, teacher: Any) -> Any:
    """Angle-wise loss: mean over triplets of distinct i, j, k of l_delta(cos angle t_i t_j t_k -
    cos angle s_i s_j s_k) (paper eq. 6-7; the sum over triplets is taken as a mean)."""
    import torch

    n = student.shape[0]
    idx = torch.arange(n)
    distinct = (idx[:, None, None] != idx[None, :, None]) & (idx[None, :, None] != idx[None, None, :]) & (
        idx[:, None, None] != idx[None, None, :])
    return huber(_cosines(teacher)[distinct] - _cosines(student)[distinct]).mean()


def rkd(fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, steps: int = 300, batch: int = 48,
        w_dist: float = 25.0, w_angle: float = 50.0, site_weight: float = SITE_WEIGHT) -> MLPModel:
    """The MLP trained on replay + site windows with RKD from the fleet model as a regulariser.

    Each step adds ``w_dist * L_D + w_angle * L_A`` (the paper's weights 25 and 50) between the
    fleet model's logits (teacher embedding; its temperature drops out: both losses are scale
    invariant) and the student's penultimate activations, on ``batch`` replay windows drawn
    at random: the student keeps the fleet model's relations between the fleet's windows while
    the cross-entropy fits the site."""
    import torch

    x, y, w = site_set(fleet, labelled, site_weight)
    m = fleet.model
    z = (x - m.mean) / m.scale
    replay = np.asarray(fleet.data.x, np.float64)
    zr = torch.as_tensor((replay - m.mean) / m.scale, dtype=torch.float64)
    teacher = torch.as_tensor(m.logits(replay) * m.temperature, dtype=torch.float64)
    gen = np.random.default_rng(seed)
    picks = [torch.as_tensor(gen.choice(len(replay), size=min(batch, len(replay)), replace=False))
             for _ in range(steps)]

    def extra(net: Any, step: int) -> Any:
        i = picks[step]
        emb = net[:-1](zr[i])
        return w_dist * rkd_distance(emb, teacher[i]) + w_angle * rkd_angle(emb, teacher[i])

    net = train_mlp(build_mlp(_sizes(x.shape[1]), seed), z, y, w, steps=steps, extra=extra)
    return to_model(net, m.mean, m.scale, "faulttype-mlp+rkd", w_dist=w_dist, w_angle=w_angle,
                    n_site_windows=len(labelled.y))


# -- registry ----------------------------------------------------------------------------------------

Adapter = Callable[..., Adapted]
ADAPTERS: dict[str, Adapter] = {"finetune": finetune, "finetune-sp": finetune_sp, "mlp": mlp, "ke": ke,
                                 "ke-dense": ke_dense, "rkd": rkd}


def get(name: str) -> Adapter:
    """The adapter called ``name`` (ModelsError naming the known ones otherwise)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ModelsError(_COMP, f"unknown adaptation method {name!r}", f"use one of {sorted(ADAPTERS)}") from None


def adapt(method: str, fleet: Fleet, labelled: FeatureSet, *, seed: int = 0, **opts: Any) -> Adapted:
    """Adapt with the method called ``method``."""
    return get(method)(fleet, labelled, seed=seed, **opts)


__all__ = ["ADAPTERS", "L2SP", "SITE_WEIGHT", "Adapted", "Fleet", "LayerSplit", "MLPModel", "adapt", "build_mlp",
           "extract_slim", "finetune", "finetune_sp", "get", "huber", "ke", "ke_dense", "kels", "knowledge_evolution", "masked",
           "mlp", "reset_hypothesis", "rkd", "rkd_angle", "rkd_distance", "site_set", "to_model", "train_mlp"]
