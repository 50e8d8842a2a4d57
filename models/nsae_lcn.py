"""NSAE-LCN bearing-fault classifier (Jia et al. 2018, Neurocomputing 272), numpy + scipy.

A normalized sparse autoencoder (NSAE: ReLU, no bias, tied weights, L1 sparsity on the
activations, soft orthonormality ``||W W^T - I||^2``) learns ``n_features`` local filters of
``seg_len`` samples from random segments of the (per-window z-scored) training windows. The
local connection network (LCN) applies the filters to every segment (``stride`` apart),
averages the ReLU responses over segments (shift invariance) and ends in a softmax
classifier. Both stages are fitted with L-BFGS on analytic gradients; no deep-learning
framework is involved. ``to_onnx`` lives in :mod:`edgevib.models.nsae_lcn_onnx`.

Use (``ws`` a :class:`edgevib.models.split.WindowSet`; tests/models/test_nsae_lcn.py runs it)::

    model = train(ws, seed=0)
    model.predict_proba(ws.x3d()).shape   # (N, len(ws.classes))
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.optimize
import scipy.signal
from edgevib.models.errors import DataError

from edgevib.progress import Progress, null_progress

if TYPE_CHECKING:
    import onnx
    from edgevib.models.split import WindowSet

log = logging.getLogger(__name__)
ARCH = "nsae-lcn"
_COMP = "models.nsae_lcn"
EPS = 1e-8  # variance floor (g^2): keeps an all-zero window finite


@dataclass(frozen=True)
class Options:
    """Hyper-parameters of :func:`train` (defaults chosen on CWRU, see docs/nsae_lcn.md)."""

    seg_len: int = 128  # Nin: samples per local segment (~10 ms at 12 kHz)
    n_features: int = 100  # Nout: learned filters
    stride: int = 8  # hop between segments; 32 loses 1-2 points to phase aliasing (docs/nsae_lcn.md)
    n_segments: int = 10000  # random segments for the NSAE
    sparsity: float = 0.1  # L1 weight on activations
    ortho: float = 1.0  # weight of ||W W^T - I||^2
    nsae_iters: int = 150
    weight_decay: float = 1e-4  # L2 on the softmax weights
    clf_iters: int = 300
    # noisy copies of the training set: robust to noise, but they cost 6-17 points on the
    # load-0/1/2 hold-outs (docs/nsae_lcn.md), so the shipped default trains on clean data
    noise_copies: int = 0
    noise_snr_db: tuple[float, float] = (-6.0, 10.0)  # SNR range of those copies
    # resampled copies of the training windows for the softmax: fault frequencies scale with
    # shaft speed, which spans +-2 % over the CWRU loads (docs/nsae_lcn.md: +-2 % beat +-4 %)
    speed_factors: tuple[float, ...] = (0.98, 1.02)
    # FIR low-pass (Hz, at the model's 12 kHz) before normalising: native-12 kHz and resampled
    # 48 kHz recordings differ above ~5 kHz only through their anti-alias filters
    lowpass_hz: float | None = 5000.0
    lowpass_taps: int = 63

    def __post_init__(self) -> None:
        for name in ("seg_len", "n_features", "stride", "n_segments", "nsae_iters", "clf_iters",
                     "lowpass_taps", "noise_copies"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "noise_copies" else 1):
                raise DataError(_COMP, f"{name}={v!r}", "use a positive integer (noise_copies may be 0)")
        if any(not 0.5 < f < 2.0 or f == 1.0 for f in self.speed_factors):
            raise DataError(_COMP, f"speed_factors={self.speed_factors}",
                            "use factors between 0.5 and 2 other than 1, e.g. (0.96, 1.04), or ()")
        if min(self.sparsity, self.ortho, self.weight_decay) < 0:
            raise DataError(_COMP, f"sparsity={self.sparsity}, ortho={self.ortho}, weight_decay="
                            f"{self.weight_decay}", "use values >= 0")


def lowpass_fir(cutoff_hz: float | None, taps: int, fs: float) -> np.ndarray | None:
    """Linear-phase (symmetric) FIR taps, so Conv's correlation equals convolution."""
    if cutoff_hz is None:
        return None
    if not 0 < cutoff_hz < fs / 2 or taps < 3 or taps % 2 == 0:
        raise DataError(_COMP, f"lowpass_hz={cutoff_hz}, lowpass_taps={taps} at {fs} Hz",
                        f"use 0 < lowpass_hz < {fs / 2} and an odd number of taps >= 3, or lowpass_hz=None")
    return scipy.signal.firwin(taps, cutoff_hz, fs=fs)


def prefilter(x: np.ndarray, fir: np.ndarray | None) -> np.ndarray:
    """'valid' FIR filtering of [N, W] windows -> [N, W - taps + 1] (identity if ``fir`` is None)."""
    if fir is None:
        return np.asarray(x, dtype=np.float64)
    return scipy.signal.fftconvolve(np.asarray(x, np.float64), fir[None, :], mode="valid", axes=-1)


def normalize(x: np.ndarray) -> np.ndarray:
    """Z-score each window along the last axis (float64): gain- and offset-free input."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    return xc / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + EPS)


def segments(xn: np.ndarray, seg_len: int, stride: int) -> np.ndarray:
    """[N, W] -> [N, S, seg_len] views, S = (W - seg_len) // stride + 1 (as a strided Conv)."""
    return np.lib.stride_tricks.sliding_window_view(xn, seg_len, axis=-1)[:, ::stride, :]


def nsae_cost(theta: np.ndarray, X: np.ndarray, n_features: int, sparsity: float,
              ortho: float) -> tuple[float, np.ndarray]:
    """NSAE cost and gradient for segments ``X`` [M, Nin] and flat filters ``theta``.

    ``J = |W^T relu(W x) - x|^2 / 2M + sparsity * sum relu(W x) / M + ortho/2 |W W^T - I|^2``.
    Works in ``X``'s dtype: float32 halves the time on the edge-class CPUs we train on.
    """
    m, n_in = X.shape
    W = theta.reshape(n_features, n_in).astype(X.dtype, copy=False)
    A = X @ W.T
    H = np.maximum(A, 0.0)
    E = H @ W - X
    G = W @ W.T - np.eye(n_features, dtype=X.dtype)
    sq = float(np.sum(E * E, dtype=np.float64))
    cost = 0.5 * sq / m + sparsity * float(H.sum(dtype=np.float64)) / m + 0.5 * ortho * float(np.sum(G * G))
    dH = (E @ W.T + sparsity) / m
    dA = dH * (A > 0)
    grad = H.T @ (E / m) + dA.T @ X + 2.0 * ortho * (G @ W)
    return cost, grad.ravel().astype(np.float64)


def softmax_cost(theta: np.ndarray, F: np.ndarray, Y: np.ndarray,
                 weight_decay: float) -> tuple[float, np.ndarray]:
    """Mean cross-entropy + ``weight_decay/2 |V|^2`` of softmax(F V + b); ``Y`` one-hot [N, C]."""
    n, k = F.shape
    c = Y.shape[1]
    V = theta[: k * c].reshape(k, c)
    b = theta[k * c:]
    Z = F @ V + b
    Z -= Z.max(axis=1, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    cost = -float(np.sum(Y * logp)) / n + 0.5 * weight_decay * float(np.sum(V * V))
    D = (np.exp(logp) - Y) / n
    return cost, np.concatenate([(F.T @ D + weight_decay * V).ravel(), D.sum(axis=0)])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_input(x: Any, window: int | None = None, component: str = _COMP) -> np.ndarray:
    """``x`` as float32 [N, 1, W] with finite values, else a :class:`DataError` saying what to pass."""
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[1] != 1 or arr.shape[0] < 1:
        raise DataError(component, f"input of shape {arr.shape}",
                        "pass float32 windows shaped [N, 1, W] (use WindowSet.x3d() or x[:, None, :])")
    if window is not None and arr.shape[2] != window:
        raise DataError(component, f"window of {arr.shape[2]} samples",
                        f"pass windows of exactly {window} samples at the model's sample rate")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(component, f"input dtype {arr.dtype}", "pass float32 acceleration in g")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataError(component, f"{int(np.sum(~np.isfinite(arr)))} NaN/inf samples in the input",
                        "drop or repair windows with NaN/inf before predicting")
    return arr


@dataclass(frozen=True)
class NSAELCN:
    """A trained NSAE-LCN: ``filters`` [K, Nin], ``clf_w`` [K, C] and ``clf_b`` [C] act on the
    raw segment-averaged features (feature standardisation is folded into them)."""

    filters: np.ndarray
    fir: np.ndarray | None
    clf_w: np.ndarray
    clf_b: np.ndarray
    stride: int
    window: int
    classes: tuple[str, ...]
    fs: float = 12000.0
    arch: str = ARCH

    def features(self, x: np.ndarray) -> np.ndarray:
        """Segment-averaged ReLU filter responses [N, K] of windows ``x`` [N, 1, W]."""
        xn = normalize(prefilter(check_input(x, self.window)[:, 0, :], self.fir))
        return lcn_features(xn, self.filters, self.stride)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities float32 [N, C] of raw windows float32 [N, 1, W] in g."""
        return _softmax(self.features(x) @ self.clf_w + self.clf_b).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices [N]."""
        return np.argmax(self.predict_proba(x), axis=1)

    def to_onnx(self) -> onnx.ModelProto:
        """The ONNX graph (opset 17): normalise, strided Conv, ReLU, ReduceMean, MatMul+Add, Softmax."""
        from edgevib.models.nsae_lcn_onnx import build_onnx

        return build_onnx(self)


def lcn_features(xn: np.ndarray, filters: np.ndarray, stride: int, batch: int = 256) -> np.ndarray:
    """Mean over segments of relu(filters @ segment) for normalised windows ``xn`` [N, W]."""
    out = np.empty((len(xn), len(filters)))
    f32 = filters.T.astype(np.float32)
    for i in range(0, len(xn), batch):
        seg = segments(xn[i:i + batch].astype(np.float32), filters.shape[1], stride)
        out[i:i + batch] = np.maximum(seg @ f32, 0.0).mean(axis=1)
    return out


def add_noise(x: np.ndarray, snr_db: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """``x`` [N, W] plus white Gaussian noise at ``snr_db`` (per window) relative to its power."""
    p = np.mean(np.asarray(x, np.float64) ** 2, axis=-1, keepdims=True)
    snr = np.broadcast_to(np.asarray(snr_db, np.float64), (len(x),))[:, None]
    return x + rng.standard_normal(x.shape) * np.sqrt(p / 10 ** (snr / 10))


def change_speed(x: np.ndarray, factor: float, edge: int = 32) -> np.ndarray:
    """Windows [N, W] as if the shaft ran ``factor`` times faster (all frequencies scaled),
    by polyphase resampling; ``edge`` samples of filter transient are cut from both ends."""
    frac = Fraction(factor).limit_denominator(64)
    y = scipy.signal.resample_poly(np.asarray(x, np.float64), frac.denominator, frac.numerator, axis=-1)
    return y[:, edge:-edge]


def train(train: WindowSet, *, seed: int = 0, progress: Progress | None = None, **opts: Any) -> NSAELCN:
    """Fit NSAE filters on random training segments, then the softmax on LCN features."""
    try:
        o = Options(**opts)
    except TypeError as exc:
        names = ", ".join(f.name for f in dataclasses.fields(Options))
        raise DataError(_COMP, f"unknown option in {sorted(opts)}", f"use some of: {names}") from exc
    report = progress or null_progress
    x = np.asarray(train.x)
    taps = o.lowpass_taps if o.lowpass_hz is not None else 1
    if x.ndim != 2 or x.shape[1] * min((1.0, *o.speed_factors)) < o.seg_len + taps + 64 or len(x) < 2:
        raise DataError(_COMP, f"training windows of shape {x.shape}",
                        "give >= 2 windows [N, W] with W >= seg_len + lowpass_taps + 64")
    n_cls = len(train.classes)
    labels = np.asarray(train.y)
    if labels.shape != (len(x),) or labels.min() < 0 or labels.max() >= n_cls:
        raise DataError(_COMP, f"labels of shape {labels.shape} in {labels.min()}..{labels.max()}",
                        f"give one label per window, indexing the {n_cls} classes")
    if len(np.unique(train.y)) < 2:
        raise DataError(_COMP, f"training labels hold {len(np.unique(train.y))} class",
                        "train on windows of at least two classes")
    rng = np.random.default_rng(seed)
    total = o.nsae_iters + o.clf_iters
    x = check_input(x[:, None, :])[:, 0, :]
    y = np.asarray(train.y)
    fir = lowpass_fir(o.lowpass_hz, o.lowpass_taps, float(train.fs))
    if o.noise_copies:
        noisy = [add_noise(x, rng.uniform(*o.noise_snr_db, size=len(x)), rng) for _ in range(o.noise_copies)]
        x = np.concatenate([x, *noisy])
        y = np.tile(y, o.noise_copies + 1)
    xn = normalize(prefilter(x, fir))

    # NSAE on random segments; each segment is centred so filters see waveform shape, not offset
    rows = rng.integers(0, len(xn), o.n_segments)
    cols = rng.integers(0, xn.shape[1] - o.seg_len + 1, o.n_segments)
    X = xn[rows[:, None], cols[:, None] + np.arange(o.seg_len)]
    X = (X - X.mean(axis=1, keepdims=True)).astype(np.float32)
    w0 = rng.standard_normal((o.n_features, o.seg_len)) / np.sqrt(o.seg_len)
    it = [0]

    def step(_: np.ndarray) -> None:
        it[0] += 1
        report(min(it[0], total), total, "nsae")

    res = scipy.optimize.minimize(nsae_cost, w0.ravel(), args=(X, o.n_features, o.sparsity, o.ortho),
                                  jac=True, method="L-BFGS-B", callback=step,
                                  options={"maxiter": o.nsae_iters})
    # centring each segment equals centring each filter (w.(s - mean s) = (w - mean w).s),
    # which keeps the LCN a plain strided Conv
    filters = res.x.reshape(o.n_features, o.seg_len)
    filters = filters - filters.mean(axis=1, keepdims=True)
    log.info("nsae: cost %.4f after %d iterations (%s)", res.fun, res.nit, res.message)

    report(o.nsae_iters, total, "lcn features")
    F = lcn_features(xn, filters, o.stride)
    feats = [F] + [lcn_features(normalize(prefilter(change_speed(x, f), fir)), filters, o.stride)
                   for f in o.speed_factors]
    F, y = np.concatenate(feats), np.tile(y, len(feats))
    mu, sd = F.mean(axis=0), F.std(axis=0) + 1e-8
    Fz = (F - mu) / sd
    Y = np.eye(n_cls)[y]
    it[0] = o.nsae_iters

    res = scipy.optimize.minimize(softmax_cost, np.zeros(F.shape[1] * n_cls + n_cls),
                                  args=(Fz, Y, o.weight_decay), jac=True, method="L-BFGS-B",
                                  callback=step, options={"maxiter": o.clf_iters})
    V = res.x[: F.shape[1] * n_cls].reshape(F.shape[1], n_cls)
    b = res.x[F.shape[1] * n_cls:]
    log.info("softmax: cost %.4f after %d iterations", res.fun, res.nit)
    report(total, total, "done")
    # fold the standardisation into the classifier: (F - mu)/sd @ V + b = F @ V' + b'
    return NSAELCN(filters.astype(np.float32), None if fir is None else fir.astype(np.float32),
                   (V / sd[:, None]).astype(np.float32), (b - (mu / sd) @ V).astype(np.float32),
                   o.stride, int(x.shape[1]), tuple(train.classes), float(train.fs))
