"""Model cards: a markdown page per shipped model, written from its metrics JSON.

The JSON is what ``edgevib models build-zoo`` measures (see :func:`write_card` for keys);
every number on the card comes from it, none is typed in by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgevib.models.evaluate import confusion_table


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f} %" if isinstance(x, (int, float)) else "n/a"


def _row(name: str, r: Mapping[str, Any] | None) -> str:
    if not r:
        return f"| {name} | n/a | n/a | n/a |"
    rec = r.get("recordings", {})
    return (f"| {name} | {_pct(r.get('accuracy'))} | {float(r.get('macro_f1', 0)):.3f} | "
            f"{rec.get('correct', '?')}/{rec.get('total', '?')} |")


def render_card(m: Mapping[str, Any]) -> str:
    """Markdown for metrics ``m``: keys ``name``, ``arch``, ``classes``, ``window``, ``hop``, ``fs``,
    ``data`` (dir, recordings), ``time_split`` and ``load_split`` (evaluate() results with
    ``train_windows``/``test_windows``/``train_seconds``), ``onnx_bytes``, ``reproduce``."""
    t, ld = m.get("time_split") or {}, m.get("load_split") or {}
    loads = ",".join(str(x) for x in ld.get("test_loads", [])) or "?"
    rows = [_row("time split, clean", t.get("clean"))]
    rows += [_row(f"time split, SNR {k} dB", v) for k, v in (t.get("snr") or {}).items()]
    rows += [_row(f"load {loads} held out, clean", ld.get("clean"))]
    rows += [_row(f"load held out, SNR {k} dB", v) for k, v in (ld.get("snr") or {}).items()]
    classes = list(m.get("classes", []))
    cm = (t.get("clean") or {}).get("confusion")
    wrong = ((ld.get("clean") or {}).get("recordings") or {}).get("wrong", [])
    data = m.get("data", {})
    lines = [
        f"# {m.get('name', m.get('arch', 'model'))}: bearing-fault classifier ({m.get('arch', '?')})",
        "",
        f"`{m.get('name')}.onnx` ({m.get('onnx_bytes', '?')} bytes) follows the edgevib ONNX contract: input `x` "
        f"float32 [N, 1, {m.get('window')}] raw acceleration in g at {m.get('fs')} Hz, output `probs` [N, "
        f"{len(classes)}] over classes {', '.join(classes)}. Windows hop {m.get('hop')} samples.",
        "",
        "## Data",
        f"CWRU Bearing Data Center, drive-end accelerometer, SKF 6205 bearing, motor loads 0-3 hp; "
        f"{data.get('n_recordings', '?')} recordings of these classes from `{data.get('dir', '?')}`. "
        "Normal baselines (48 kHz) are resampled to 12 kHz with a polyphase filter before windowing; "
        "OR faults at positions other than @6 and 0.028 in faults are not among the classes.",
        "",
        "## Splits (no leakage)",
        f"- **time split**: per recording, train windows from the first 70 %, test windows from the last 30 %; "
        f"no window crosses the cut and the overlap check finds 0 shared samples. "
        f"{t.get('train_windows', '?')} train / {t.get('test_windows', t.get('n_windows', '?'))} test windows.",
        f"- **load hold-out**: a second model of the same recipe trained on the other loads only, tested on whole "
        f"recordings at load {loads} ({ld.get('train_windows', '?')} train / "
        f"{ld.get('n_windows', '?')} test windows). This is the closer estimate of performance on a machine "
        "running at a condition the model never saw.",
        "",
        "## Results",
        "White noise at a given SNR is added per window (noise power = window power / 10^(SNR/10), seeded). "
        "\"Recordings\" counts test recordings whose majority-vote window prediction is right.",
        "",
        "| evaluation | accuracy | macro-F1 | recordings |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Training time: {float(t.get('train_seconds', 0)):.0f} s (time split), "
        f"{float(ld.get('train_seconds', 0)):.0f} s (load split), seed {m.get('seed', '?')}.",
        "",
    ]
    if cm:
        lines += ["Confusion matrix, time split, clean (rows true, columns predicted):", "", "```",
                  confusion_table(cm, classes), "```", ""]
    if wrong:
        lines += ["Recordings misread in the load hold-out: " + "; ".join(wrong) + ".", ""]
    lines += [
        "## Limits",
        "- One test rig, one bearing type, seeded (EDM) faults: accuracy on real machines with natural "
        "wear, other bearings or sensor mounts will be lower; pair the classifier with the edge's "
        "envelope-spectrum physics check and healthy-baseline anomaly score.",
        "- Only three normal recordings exist (loads 0, 1, 3): the normal class is the least varied.",
        "",
        "## Reproduce",
        "```", str(m.get("reproduce", "edgevib models build-zoo --data DIR --out models/zoo")), "```", "",
    ]
    return "\n".join(lines)


def write_card(metrics: Mapping[str, Any] | str | Path, path: str | Path) -> Path:
    """Write the card for ``metrics`` (a dict or a JSON file) to ``path``."""
    m = json.loads(Path(metrics).read_text()) if isinstance(metrics, (str, Path)) else metrics
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_card(m))
    return p
