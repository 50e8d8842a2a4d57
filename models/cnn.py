"""WDCNN-class 1D CNN for bearing faults (Zhang et al. 2017), trained with acquisition-chain
augmentation and exported to the edgevib ONNX contract.

The graph takes raw acceleration in g ``[N, 1, W]`` and normalises each window itself
(mean 0, std 1), so gain and DC offset of a sensor do not matter. Layer widths are
arguments of :func:`build_wdcnn` so that compression can prune batch-norm channels.

>>> net = build_wdcnn(10)
>>> sum(p.numel() for p in net.parameters()) < 80_000
True
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgevib.models.augment import AugmentConfig, Augmenter, segments_from_windows
from edgevib.models.errors import ModelsError

from edgevib.extras import require
from edgevib.progress import Progress, null_progress

torch: Any = require("torch", extra="train", feature="CNN training")
nn: Any = torch.nn
log = logging.getLogger(__name__)
_COMP = "models.cnn"
WIDTHS = (16, 32, 64, 64, 64)


class WDCNN(nn.Module):
    """Per-window normalisation, a wide first conv, small conv blocks, then a dense head.

    ``blocks[i]`` is ``Sequential(conv, bn, relu, maxpool)``: the BN of block ``i`` scales
    the channels that network slimming prunes. ``head`` sees ``widths[-1] * pool_out``.
    """

    def __init__(self, n_classes: int, widths: Sequence[int] = WIDTHS, *, first_kernel: int = 64,
                 first_stride: int = 16, hidden: int = 100, window: int = 2048,
                 dropout: float = 0.3, pool_out: int = 4, envelope: int = 4) -> None:
        super().__init__()
        self.window, self.widths = window, tuple(widths)
        # Everything needed to rebuild this shape (e.g. a pruned or distilled copy).
        self.config = {"n_classes": n_classes, "widths": self.widths, "first_kernel": first_kernel,
                       "first_stride": first_stride, "hidden": hidden, "window": window,
                       "dropout": dropout, "pool_out": pool_out, "envelope": envelope}
        self.envelope = EnvelopeSpectrum(envelope, window) if envelope > 0 else None
        env_dim = self.envelope.out_dim if self.envelope is not None else 0
        layers, c_in = [], 1
        for i, c in enumerate(widths):
            conv = (nn.Conv1d(1, c, first_kernel, first_stride, padding=(first_kernel - first_stride) // 2)
                    if i == 0 else nn.Conv1d(c_in, c, 3, padding=1))
            layers.append(nn.Sequential(conv, nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(2)))
            c_in = c
        self.blocks = nn.ModuleList(layers)
        # Averaging to a few positions keeps some order but tolerates shifts and speed change.
        self.pool = nn.AdaptiveAvgPool1d(pool_out)
        self.flat = nn.Flatten()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in * pool_out + env_dim, hidden),
                                  nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: Any) -> Any:
        """Logits ``[N, C]`` from raw ``[N, 1, W]``."""
        x = x - x.mean(dim=-1, keepdim=True)
        x = x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-6)
        z = x
        for b in self.blocks:
            z = b(z)
        z = self.flat(self.pool(z))
        if self.envelope is not None:
            z = torch.cat([z, self.envelope(x)], dim=1)
        return self.head(z)


class EnvelopeSpectrum(nn.Module):
    """Envelope spectra (0-``max_hz``) of ``bands`` learnable band-pass channels.

    Fault type shows as impulse rates (BPFI, BPFO, ball spin: 100-170 Hz here and their
    harmonics) that survive a change of sensor or filter chain better than the resonance
    shapes the conv stack keys on. The DFT is a fixed conv so the graph needs no FFT op.
    """

    def __init__(self, bands: int, window: int, *, decim: int = 8, fs: float = 12000.0,
                 max_hz: float = 500.0, taps: int = 33, dim: int = 32) -> None:
        super().__init__()
        self.bandpass = nn.Conv1d(1, bands, taps, padding=taps // 2, bias=False)
        self.decim, n = decim, window // decim
        k = np.arange(1, int(max_hz * n / (fs / decim)) + 1)
        arg = 2 * np.pi * k[:, None] * np.arange(n)[None, :] / n
        dft = np.concatenate([np.cos(arg), np.sin(arg)]) * np.hanning(n)[None, :]
        self.register_buffer("dft", torch.tensor(dft[:, None, :], dtype=torch.float32))
        self.bins, self.bands = len(k), bands
        self.proj = nn.Sequential(nn.Linear(bands * len(k), dim), nn.BatchNorm1d(dim), nn.ReLU())
        self.out_dim = dim

    def forward(self, x: Any) -> Any:
        e = nn.functional.avg_pool1d(self.bandpass(x).pow(2), self.decim)  # squared envelope
        e = e - e.mean(dim=-1, keepdim=True)
        z = nn.functional.conv1d(e.reshape(-1, 1, e.shape[-1]), self.dft)[..., 0]
        mag = (z[:, :self.bins].pow(2) + z[:, self.bins:].pow(2) + 1e-12).sqrt()
        mag = mag.reshape(-1, self.bands * self.bins)
        # Relative spectrum: where the peaks are, not how loud the band is.
        mag = mag / (mag.mean(dim=-1, keepdim=True) + 1e-6)
        return self.proj(torch.log1p(mag))


def build_wdcnn(n_classes: int, widths: Sequence[int] = WIDTHS, **kw: Any) -> Any:
    """A fresh :class:`WDCNN`; ``widths`` are the channels of the conv blocks (first = wide)."""
    if n_classes < 2 or not widths or min(widths) < 1:
        raise ModelsError(_COMP, f"n_classes={n_classes}, widths={tuple(widths)}",
                          "use >= 2 classes and positive widths, e.g. (16, 32, 64, 64, 64)")
    return WDCNN(n_classes, widths, **kw)


class _Probs(nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Any) -> Any:
        return torch.softmax(self.net(x), dim=-1)


@dataclass
class CNNModel:
    """A trained network with its classes; ``predict_proba`` and ``to_onnx`` follow the contract."""

    net: Any
    classes: tuple[str, ...]
    fs: float = 12000.0
    history: list[dict[str, float]] = field(default_factory=list)
    arch: str = "cnn"

    @property
    def window(self) -> int:
        return int(self.net.window)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != self.window:
            raise ModelsError(_COMP, f"input of shape {x.shape}",
                              f"pass float32 [N, 1, {self.window}] raw windows in g (WindowSet.x3d())")
        if not np.all(np.isfinite(x)):
            raise ModelsError(_COMP, "input holds NaN or inf", "drop or repair non-finite samples first")
        return x.astype(np.float32, copy=False)

    def predict_proba(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Class probabilities float32 ``[N, C]`` for raw windows ``[N, 1, W]``."""
        x = self._check(x)
        self.net.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                out.append(torch.softmax(self.net(torch.from_numpy(x[i:i + batch])), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def to_onnx(self, opset: int = 17) -> Any:
        """The network plus softmax as ``onnx.ModelProto``: input ``x`` [N,1,W], output ``probs``."""
        onnx = require("onnx", extra="train", feature="CNN export")
        self.net.eval()
        buf = io.BytesIO()
        # TorchScript exporter: the dynamo one needs onnxscript, not a project dependency.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(_Probs(self.net), (torch.zeros(1, 1, self.window),), buf, dynamo=False,
                              input_names=["x"], output_names=["probs"], opset_version=opset,
                              dynamic_axes={"x": {0: "N"}, "probs": {0: "N"}})
        return onnx.load_from_string(buf.getvalue())


@dataclass(frozen=True)
class TrainOptions:
    """Defaults chosen to train in a few minutes on 2 CPU cores (see docs/cnn.md)."""

    epochs: int = 30
    steps_per_epoch: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    widths: tuple[int, ...] = WIDTHS
    pool_out: int = 4
    hidden: int = 100
    dropout: float = 0.3
    envelope: int = 4  # band-pass channels of the envelope-spectrum branch (0: none)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 1  # on a shared 2-core box, 2 threads ran 5x slower than 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.augment, str):  # from the CLI: --opt augment=none
            if self.augment not in ("none", "default"):
                raise ModelsError(_COMP, f"augment={self.augment!r}", "use augment=none or augment=default")
            cfg = AugmentConfig.none() if self.augment == "none" else AugmentConfig()
            object.__setattr__(self, "augment", cfg)
        for name in ("epochs", "steps_per_epoch", "batch_size", "threads"):
            if not int(getattr(self, name)) >= 1:
                raise ModelsError(_COMP, f"{name}={getattr(self, name)!r}", f"use a positive whole number of {name}")
        if not self.lr > 0:
            raise ModelsError(_COMP, f"lr={self.lr!r}", "use a positive learning rate, e.g. 3e-3")


def train(train: Any, *, seed: int = 0, progress: Progress | None = None, epochs: int | None = None,
          **opts: Any) -> CNNModel:
    """Train on a :class:`~edgevib.models.split.WindowSet`; ``opts`` override :class:`TrainOptions`.

    Batches are random crops (with augmentation) of the contiguous segments the windows
    came from, balanced over classes; ``epochs * steps_per_epoch`` steps in all.
    """
    try:
        o = TrainOptions(**opts) if epochs is None else TrainOptions(epochs=epochs, **opts)
    except TypeError as exc:
        raise ModelsError(_COMP, str(exc), f"use options among {sorted(TrainOptions.__dataclass_fields__)}") from exc
    if len(train) == 0 or len(np.unique(train.y)) < 2:
        raise ModelsError(_COMP, f"training set of {len(train)} windows, classes {np.unique(train.y).tolist()}",
                          "train on windows of at least two classes")
    threads = torch.get_num_threads()
    try:
        if o.device == "cpu":
            torch.set_num_threads(o.threads)
        return _fit(train, o, seed, progress or null_progress)
    finally:
        torch.set_num_threads(threads)


def _fit(train: Any, o: TrainOptions, seed: int, report: Progress) -> CNNModel:
    torch.manual_seed(seed)
    segs, labels = segments_from_windows(train.x, train.recording, train.start, train.y)
    aug = Augmenter(segs, labels, window=train.window, config=o.augment, seed=seed, fs=train.fs, device=o.device)
    net = build_wdcnn(len(train.classes), o.widths, window=train.window, pool_out=o.pool_out,
                      hidden=o.hidden, dropout=o.dropout, envelope=o.envelope).to(o.device)
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    total = o.epochs * o.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    history: list[dict[str, float]] = []
    t0, c0 = time.monotonic(), time.process_time()
    for ep in range(o.epochs):
        net.train()
        run_loss = run_acc = 0.0
        for _ in range(o.steps_per_epoch):
            x, y = aug.batch(o.batch_size)
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss.detach())
            run_acc += float((logits.argmax(1) == y).float().mean())
        rec = {"epoch": ep + 1, "loss": run_loss / o.steps_per_epoch, "acc": run_acc / o.steps_per_epoch,
               "seconds": time.monotonic() - t0, "cpu_seconds": time.process_time() - c0}
        history.append(rec)
        log.info("epoch %d loss %.4f acc %.4f", ep + 1, rec["loss"], rec["acc"])
        report(ep + 1, o.epochs, f"loss {rec['loss']:.3f} acc {rec['acc']:.3f}")
    net = net.to("cpu").eval()
    return CNNModel(net, tuple(train.classes), float(train.fs), history)
