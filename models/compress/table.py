"""Measure compressed models side by side: parameters, ONNX bytes, latency, accuracy.

Latency: ONNX Runtime on CPU, one intra-op and one inter-op thread, all models loaded at
once and timed in interleaved rounds (model A, B, C, A, B, C, ...) so background load hits
them alike; the lower quartile over rounds of the per-window time is reported for batch
1 and 32 (other processes on a shared machine only ever add time).
Accuracy runs through ONNX Runtime too, i.e. it is the accuracy of the shipped file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require

ort: Any = require("onnxruntime", extra="edge", feature="compression benchmark")
log = logging.getLogger(__name__)
_COMP = "models.compress.table"
COLUMNS = ("stage", "params", "onnx_bytes", "ms_b1", "ms_b32", "acc_time", "acc_load3", "acc_snr0", "acc_snr-4")


def session(proto: Any) -> Any:
    """A single-threaded CPU inference session of a ``ModelProto``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def probs(sess: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class probabilities [N, C] of windows ``x`` [N, 1, W] through an ONNX Runtime session."""
    return np.concatenate([sess.run(["probs"], {"x": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def predict(sess: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class indices of windows ``x`` [N, 1, W] through an ONNX Runtime session."""
    return np.argmax(probs(sess, x, batch), axis=1)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to each window's power (seeded)."""
    rng = np.random.default_rng(seed)
    p = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    return (x + rng.standard_normal(x.shape) * np.sqrt(p / 10 ** (snr_db / 10))).astype(np.float32)


def latency_ms(sessions: dict[str, Any], window: int, *, batches: Sequence[int] = (1, 32), rounds: int = 30,
               per_round: int = 20, seed: int = 0) -> dict[str, dict[int, float]]:
    """Milliseconds per window (lower quartile of rounds) of each session, per batch size."""
    if rounds < 1 or per_round < 1:
        raise CompressError(_COMP, f"rounds={rounds}, per_round={per_round}", "use positive counts")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[int, float]] = {k: {} for k in sessions}
    for b in batches:
        x = rng.standard_normal((b, 1, window)).astype(np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():  # warm-up
            for _ in range(3):
                s.run(["probs"], {"x": x})
        n = max(1, per_round // b) if b > 1 else per_round
        for _ in range(rounds):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    s.run(["probs"], {"x": x})
                times[k].append((time.perf_counter() - t0) / (n * b) * 1e3)
        for k in sessions:
            # lower quartile: on a shared machine, other processes only ever add time
            out[k][b] = float(np.percentile(times[k], 25))
    return out


def measure(stages: Sequence[tuple[str, Any, int]], tests: dict[str, tuple[np.ndarray, np.ndarray]], *,
            window: int = 2048, rounds: int = 30) -> list[dict[str, Any]]:
    """Rows of :data:`COLUMNS` for ``(name, proto, params)`` stages on the named test sets."""
    sessions = {name: session(proto) for name, proto, _ in stages}
    lat = latency_ms(sessions, window, rounds=rounds)
    rows = []
    for name, proto, params in stages:
        row: dict[str, Any] = {"stage": name, "params": int(params), "onnx_bytes": len(proto.SerializeToString()),
                               "ms_b1": lat[name][1], "ms_b32": lat[name][32]}
        for key, (x, y) in tests.items():
            row[key] = float(np.mean(predict(sessions[name], x) == y))
        rows.append(row)
        log.info("%s", row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], ref: str | None = None) -> str:
    """A markdown table; with ``ref`` (a stage name) adds size and speed ratios against it."""
    base = next((r for r in rows if r["stage"] == ref), None)
    head = ["stage", "params", "ONNX bytes", "ms/window b1", "ms/window b32", "acc time", "acc load3",
            "acc SNR 0", "acc SNR -4"]
    if base:
        head += ["smaller x", "faster x b1", "faster x b32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['stage']}`", f"{r['params']:,}", f"{r['onnx_bytes']:,}", f"{r['ms_b1']:.3f}",
                 f"{r['ms_b32']:.3f}"] + [f"{100 * r.get(k, float('nan')):.1f}" for k in COLUMNS[5:]]
        if base:
            cells += [f"{base['onnx_bytes'] / r['onnx_bytes']:.1f}", f"{base['ms_b1'] / r['ms_b1']:.2f}",
                      f"{base['ms_b32'] / r['ms_b32']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(rows: Sequence[dict[str, Any]], out: str | Path, name: str = "compression", *, ref: str | None = None,
          extra: dict[str, Any] | None = None) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` (size vs accuracy) under ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps({"rows": list(rows), **(extra or {})}, indent=2) + "\n")
    (d / f"{name}.md").write_text(markdown(rows, ref))
    plt = require("matplotlib.pyplot", extra="train", feature="compression plot")
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        for a, key in ((ax[0], "onnx_bytes"), (ax[1], "ms_b1")):
            a.scatter(r[key], 100 * r["acc_time"], label=r["stage"])
            a.annotate(r["stage"], (r[key], 100 * r["acc_time"]), fontsize=6)
    ax[0].set(xscale="log", xlabel="ONNX file bytes", ylabel="accuracy, time split (%)")
    ax[1].set(xscale="log", xlabel="ms per window, batch 1, 1 thread", ylabel="accuracy, time split (%)")
    fig.tight_layout()
    fig.savefig(d / f"{name}.png", dpi=120)
    plt.close(fig)
    return [d / f"{name}.{e}" for e in ("json", "md", "png")]
