"""Evaluate an ONNX model on a :class:`WindowSet`: accuracy, macro-F1, confusion matrix,
robustness to white noise at given SNRs, and per-recording majority vote.

Results are a JSON-ready dict; :func:`write_report` writes it plus a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.contract import meta_of_session, open_session
from edgevib.models.errors import ContractError
from edgevib.models.split import WindowSet

from edgevib.progress import Progress, null_progress

log = logging.getLogger(__name__)
_COMP = "models.evaluate"


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise per window (last axis): noise power = signal power / 10^(snr/10)."""
    p_sig = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    sigma = np.sqrt(p_sig / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).standard_normal(x.shape) * sigma
    return (x + noise).astype(np.float32)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over classes present in truth or prediction."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present])) if present.any() else 0.0


def recording_vote(ws: WindowSet, pred: np.ndarray) -> dict[str, Any]:
    """Majority vote of window predictions per recording: how many whole recordings are read right."""
    wrong: list[str] = []
    recs = np.unique(ws.recording)
    for r in recs:
        m = ws.recording == r
        vote = int(np.bincount(pred[m], minlength=len(ws.classes)).argmax())
        if vote != int(ws.y[m][0]):
            wrong.append(f"{ws.sources[r]} -> {ws.classes[vote]}")
    n = len(recs)
    return {"correct": n - len(wrong), "total": n, "accuracy": (n - len(wrong)) / n if n else 0.0, "wrong": wrong}


def scores(ws: WindowSet, pred: np.ndarray) -> dict[str, Any]:
    cm = confusion(ws.y, pred, len(ws.classes))
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    return {"accuracy": float(np.mean(pred == ws.y)), "macro_f1": macro_f1(cm), "confusion": cm.tolist(),
            "recall": {c: float(r) for c, r in zip(ws.classes, recall, strict=True)},
            "recordings": recording_vote(ws, pred)}


def predict_proba(sess: Any, x3d: np.ndarray, batch: int = 256, progress: Progress = null_progress,
                  done0: int = 0, total: int = 0) -> np.ndarray:
    """Run an onnxruntime session over ``x3d`` [N,1,W] in batches."""
    out = []
    for i in range(0, len(x3d), batch):
        out.append(np.asarray(sess.run(["probs"], {"x": np.ascontiguousarray(x3d[i:i + batch])})[0]))
        progress(done0 + i // batch + 1, total or -(-len(x3d) // batch), "batches")
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def evaluate(model: str | Path, ws: WindowSet, *, snrs: Sequence[float] = (), seed: int = 0, batch: int = 256,
             progress: Progress | None = None) -> dict[str, Any]:
    """Scores of ``model`` on ``ws`` clean and at each SNR (dB). ``ws`` must use the model's classes,
    window and rate."""
    sess, where = open_session(model)
    meta = meta_of_session(sess, where)
    if tuple(ws.classes) != meta.classes or ws.window != meta.window or ws.fs != meta.sample_rate:
        raise ContractError(_COMP, f"data has classes {list(ws.classes)}, window {ws.window}, {ws.fs} Hz; {where} "
                            f"expects {list(meta.classes)}, {meta.window}, {meta.sample_rate} Hz",
                            "build the WindowSet with the model's classes, window and sample rate")
    if len(ws) == 0:
        raise ContractError(_COMP, "empty WindowSet", "evaluate on at least one window")
    progress = progress or null_progress
    per = -(-len(ws) // batch)
    total = per * (1 + len(snrs))
    pred = predict_proba(sess, ws.x3d(), batch, progress, 0, total).argmax(1)
    result: dict[str, Any] = {"model": str(model) if not isinstance(model, bytes) else "bytes", "arch": meta.arch,
                              "version": meta.version, "classes": list(ws.classes), "n_windows": len(ws),
                              "n_recordings": len(np.unique(ws.recording)), "window": ws.window, "fs": ws.fs,
                              "seed": seed, "clean": scores(ws, pred), "snr": {}}
    for k, snr in enumerate(snrs):
        noisy = add_noise(ws.x3d(), snr, seed + k)
        p = predict_proba(sess, noisy, batch, progress, per * (k + 1), total).argmax(1)
        result["snr"][f"{snr:g}"] = scores(ws, p)
    log.info("%s: accuracy %.4f, macro-F1 %.4f on %d windows", where, result["clean"]["accuracy"],
             result["clean"]["macro_f1"], len(ws))
    return result


def confusion_table(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Plain-text confusion matrix (rows true, columns predicted)."""
    w = max(6, *(len(c) for c in classes)) + 1
    lines = ["true\\pred".ljust(w) + "".join(c[:w - 1].rjust(w) for c in classes)]
    lines += [c.ljust(w) + "".join(str(v).rjust(w) for v in row) for c, row in zip(classes, cm, strict=True)]
    return "\n".join(lines)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a confusion-matrix PNG (row-normalised colours, counts printed)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a gateway or CI
    import matplotlib.pyplot as plt

    a = np.asarray(cm, dtype=float)
    norm = a / np.maximum(a.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 0.8 + 0.55 * len(classes)), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if a[i, j]:
                ax.text(j, i, str(int(a[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p


def write_report(result: dict[str, Any], out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>_confusion.png`` in ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    js = d / f"{stem}.json"
    js.write_text(json.dumps(result, indent=2))
    c = result["clean"]
    png = plot_confusion(c["confusion"], result["classes"], d / f"{stem}_confusion.png",
                         f"{result['arch']}: acc {c['accuracy']:.3f}, macro-F1 {c['macro_f1']:.3f}")
    return js, png
