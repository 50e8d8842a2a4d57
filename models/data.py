"""Load CWRU recordings (``.mat`` as downloaded, the single-variable ``x`` form, the
project's ``.npz``) into :class:`Recording` objects, and resample them.

>>> rec = load_recording("../shared/cwru/mat/12k_Drive_End_IR007_0_105.mat")  # from the repo root
>>> rec.class_name, rec.fs, rec.rpm, rec.rig
('IR007', 12000.0, 1797.0, 'cwru')
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import re
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.signal
from edgevib.models.bearing import CWRU_DE_6205, BearingGeometry
from edgevib.models.classes import class_name, label_index
from edgevib.models.errors import DataError, ModelsError

log = logging.getLogger(__name__)

MODEL_FS = 12000.0
# Approximate CWRU shaft speed per motor load (hp), used when a file carries no RPM.
NOMINAL_RPM = {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}
_COMP = "models.data"
# e.g. 12k_Drive_End_OR007@6_0_130.mat, normal_1_98_x_only.mat, IR007_load0_12k_DE_105.npz
_NAME = re.compile(
    r"(?:(?P<fs>12|48)k_(?:Drive|Fan)_End_)?(?P<label>normal|B|IR|OR)(?P<size>\d{3})?"
    r"(?:@(?P<pos>\d+))?_(?P<load>\d)_(?P<id>\d+)"
)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare by identity
class Recording:
    """One vibration recording: ``signal`` (float32; g for CWRU, other rigs' own units) at ``fs`` Hz,
    with the test rig it comes from and the monitored bearing's geometry."""

    signal: np.ndarray
    fs: float
    rpm: float
    label: str  # 'normal', 'B', 'IR', 'OR'
    size_in: float = 0.0
    or_position: str = ""  # '@3', '@6', '@12' for OR, else ''
    load_hp: int | None = None
    source: str = ""
    rig: str = "cwru"
    geometry: BearingGeometry = CWRU_DE_6205
    severity: str = ""  # rig-specific (e.g. '5deg'); CWRU's is size_in

    @property
    def class_name(self) -> str:
        """``'normal'``, ``'IR007'``, ``'OR021'`` (OR @6), ``'OR007@3'`` (other positions), or the
        bare fault type (``'OR'``) for a recording with no fault size (other rigs)."""
        if self.label in ("B", "IR", "OR") and self.size_in == 0.0:
            return self.label
        return class_name(self.label, self.size_in, self.or_position)

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs


def _name_meta(name: str) -> dict[str, Any]:
    m = _NAME.search(name)
    if m is None:
        return {}
    out: dict[str, Any] = {"label": m["label"], "load_hp": int(m["load"]), "cwru_id": int(m["id"])}
    out["size_in"] = int(m["size"]) / 1000 if m["size"] else 0.0
    out["or_position"] = f"@{m['pos']}" if m["pos"] else ""
    if m["fs"]:
        out["fs"] = float(m["fs"]) * 1000
    elif m["label"] == "normal":
        out["fs"] = 48000.0  # the CWRU normal baseline exists only at 48 kHz
    return out


def _manifest_meta(path: Path, cwru_id: int | None) -> dict[str, Any]:
    """Metadata for ``cwru_id`` from a ``manifest.csv`` beside the file or one level up."""
    if cwru_id is None:
        return {}
    for d in (path.parent, path.parent.parent):
        man = d / "manifest.csv"
        if man.exists():
            with open(man, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("cwru_id", "").strip() == str(cwru_id):
                        return {"label": row["label"], "size_in": float(row["size_in"] or 0),
                                "or_position": row["or_position"], "load_hp": int(row["load_hp"]),
                                "rpm": float(row["rpm"] or "nan"), "fs": float(row["fs"])}
    return {}


def _read_mat(path: Path, cwru_id: int | None) -> tuple[np.ndarray, float | None]:
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(_COMP, f"{path.name!r} is not a readable MATLAB file ({exc})",
                        "pass a CWRU .mat file (MATLAB v5) or a project .npz") from exc
    de = {k: v for k, v in mat.items() if re.fullmatch(r"X\d+_DE_time", k)}
    key: str | None = None
    if cwru_id is not None:
        key = next((k for k in de if int(k[1:].split("_")[0]) == cwru_id), None)
    if key is None and len(de) == 1:
        key = next(iter(de))
    if key is None and not de and "x" in mat:
        key = "x"
    if key is None:
        found = sorted(k for k in mat if not k.startswith("__"))
        want = f"X{cwru_id:03d}_DE_time" if cwru_id is not None else "one X<nnn>_DE_time"
        raise DataError(_COMP, f"{path.name!r} holds variables {found}, expected {want} or a single 'x'",
                        "pass a drive-end CWRU recording, named as downloaded (e.g. 12k_Drive_End_IR007_0_105.mat)")
    rpm_key = key.replace("_DE_time", "RPM") if key != "x" else ""
    rpm = float(np.asarray(mat[rpm_key]).ravel()[0]) if rpm_key in mat else None
    return np.asarray(mat[key], dtype=np.float64).ravel(), rpm


def _read_npz(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(_COMP, f"{path.name!r} is not a readable .npz ({exc})",
                        "pass a project .npz with keys signal, fs, rpm, label, ...") from exc
    missing = [k for k in ("signal", "fs", "label") if k not in d]
    if missing:
        raise DataError(_COMP, f"{path.name!r} lacks keys {missing}", "write signal, fs, rpm, label, size_in, "
                        "or_position, load_hp (see the CWRU README)")
    meta: dict[str, Any] = {"fs": float(d["fs"]), "label": str(d["label"])}
    for k, conv in (("rpm", float), ("size_in", float), ("or_position", str), ("load_hp", int),
                    ("rig", str), ("severity", str)):
        if k in d and str(d[k]) != "":
            meta[k] = conv(d[k])
    if "n_balls" in d:  # the other rigs carry their bearing's geometry
        try:
            meta["geometry"] = BearingGeometry(int(d["n_balls"]), float(d["ball_diameter"]),
                                               float(d["pitch_diameter"]), float(d.get("contact_angle_deg", 0.0)),
                                               str(d.get("bearing", "")))
        except (KeyError, ValueError, ModelsError) as exc:
            raise DataError(_COMP, f"{path.name!r} has a bad bearing geometry ({exc})",
                            "write n_balls, ball_diameter, pitch_diameter, contact_angle_deg") from exc
    return np.asarray(d["signal"]).ravel(), meta


def load_recording(path: str | Path, **override: Any) -> Recording:
    """Load one ``.mat`` or ``.npz``. ``override`` (fs, rpm, label, size_in, or_position,
    load_hp) wins over what the file and its name say; a bare ``x`` file needs at least fs."""
    p = Path(path)
    if not p.is_file():
        raise DataError(_COMP, f"file {str(p)!r} not found", "pass an existing .mat or .npz recording")
    bad = set(override) - {"fs", "rpm", "label", "size_in", "or_position", "load_hp"}
    if bad:
        raise DataError(_COMP, f"unknown override {sorted(bad)}", "use fs, rpm, label, size_in, or_position, load_hp")
    meta = _name_meta(p.name)
    if p.suffix == ".npz":
        signal, file_meta = _read_npz(p)
        meta.update(file_meta)
    elif p.suffix == ".mat":
        meta = {**_manifest_meta(p, meta.get("cwru_id")), **meta}
        signal, rpm = _read_mat(p, meta.get("cwru_id"))
        if rpm is not None:
            meta["rpm"] = rpm
    else:
        raise DataError(_COMP, f"{p.name!r} has suffix {p.suffix!r}", "pass a .mat (CWRU download) or .npz file")
    meta.update({k: v for k, v in override.items() if v is not None})
    for need in ("fs", "label"):
        if need not in meta:
            raise DataError(_COMP, f"{p.name!r}: {need} unknown (not in the file or its name)",
                            f"pass {need}= explicitly, or name the file as CWRU does (12k_Drive_End_IR007_0_105.mat)")
    rpm = float(meta.get("rpm", math.nan))
    if not rpm > 0:  # absent or NaN (the 0.028 in files carry no RPM)
        load = meta.get("load_hp")
        if load not in NOMINAL_RPM:
            raise DataError(_COMP, f"{p.name!r}: shaft speed unknown", "pass rpm= (revolutions per minute)")
        rpm = NOMINAL_RPM[load]
    if signal.size == 0 or not np.all(np.isfinite(signal)):
        raise DataError(_COMP, f"{p.name!r}: signal is empty or holds NaN/inf", "use an intact recording")
    rec = Recording(signal.astype(np.float32), float(meta["fs"]), rpm, str(meta["label"]),
                    float(meta.get("size_in", 0.0)), str(meta.get("or_position", "")),
                    meta.get("load_hp"), p.name, str(meta.get("rig", "cwru")),
                    meta.get("geometry", CWRU_DE_6205), str(meta.get("severity", "")))
    rec.class_name  # noqa: B018 - validates label/size now, naming the file if bad
    return rec


def load_dir(directory: str | Path, classes: tuple[str, ...] | list[str] | None = None, *,
             fs: float | None = None, errors: list[DataError] | None = None) -> list[Recording]:
    """All ``*.npz`` and ``*.mat`` in ``directory``, sorted by name; a folder holding none but
    subfolders that do (``../shared/bearings``: one per rig) is read one level down.

    ``classes`` keeps recordings whose class (or fault type) is listed; ``fs`` resamples.
    A bad file raises, unless ``errors`` is given: then it is appended there and skipped.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataError(_COMP, f"directory {str(d)!r} not found", "pass the folder holding the CWRU .npz/.mat files")
    recs: list[Recording] = []
    paths = sorted([*d.glob("*.npz"), *d.glob("*.mat")]) or sorted([*d.glob("*/*.npz"), *d.glob("*/*.mat")])
    for p in paths:
        try:
            rec = load_recording(p)
        except DataError as exc:
            if errors is None:
                raise
            log.warning("skipping %s", exc)
            errors.append(exc)
            continue
        if classes is not None and label_index(rec.class_name, classes) is None:
            continue
        recs.append(resample(rec, fs) if fs is not None else rec)
    if not recs:
        raise DataError(_COMP, f"no recordings{' of classes ' + ','.join(classes) if classes else ''} in {str(d)!r}",
                        "point --data at the CWRU folder (with *.npz or *.mat files)")
    return recs


def resample(rec: Recording, fs: float = MODEL_FS) -> Recording:
    """Resample to ``fs`` with a polyphase filter (exact rational factor), e.g. 48 kHz -> 12 kHz."""
    if fs == rec.fs:
        return rec
    ratio = Fraction(str(float(fs))) / Fraction(str(float(rec.fs)))
    if ratio.numerator > 1000 or ratio.denominator > 1000:
        # e.g. MFPT's 48,828 Hz: 29/118 gives 12,000.1 Hz, a rate error (8 ppm) far below any
        # bearing's slip; the result is labelled with the requested rate.
        near = ratio.limit_denominator(1000)
        if abs(float(near / ratio) - 1) < 1e-4:
            log.info("%s: resampling %s -> %s Hz by %s (rate error %.1e)", rec.source, rec.fs, fs, near,
                     abs(float(near / ratio) - 1))
            ratio = near
    if not fs > 0 or ratio.numerator > 1000 or ratio.denominator > 1000:
        raise DataError(_COMP, f"{rec.source}: resampling {rec.fs} Hz -> {fs} Hz (ratio {ratio})",
                        "use rates with a simple ratio, e.g. 48000 -> 12000")
    y = scipy.signal.resample_poly(rec.signal.astype(np.float64), ratio.numerator, ratio.denominator)
    return dataclasses.replace(rec, signal=y.astype(np.float32), fs=float(fs))
