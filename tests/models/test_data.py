"""Loading CWRU recordings in the forms users have them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from edgevib.models.data import load_dir, load_recording, resample
from edgevib.models.errors import DataError

pytestmark = pytest.mark.data


def test_official_mat_picks_the_matching_de_variable(cwru_dir: Path, tmp_path: Path) -> None:
    rec = load_recording(cwru_dir / "mat" / "12k_Drive_End_IR007_0_105.mat")
    assert (rec.class_name, rec.fs, rec.rpm, rec.load_hp) == ("IR007", 12000.0, 1797.0, 0)
    assert rec.signal.dtype == np.float32 and len(rec.signal) == 121265
    npz = load_recording(cwru_dir / "IR007_load0_12k_DE_105.npz")
    np.testing.assert_allclose(rec.signal[:1000], npz.signal[:1000], rtol=1e-6)
    # like 99.mat, a file carrying a second recording's variable: the file's own number wins
    m = scipy.io.loadmat(str(cwru_dir / "mat" / "normal_0_97.mat"))
    p = tmp_path / "normal_2_99.mat"
    scipy.io.savemat(str(p), {"X098_DE_time": m["X097_DE_time"][:5000] * 0 + 7.0,
                              "X099_DE_time": m["X097_DE_time"][:4000], "X099RPM": np.array([[1750]])})
    r99 = load_recording(p)
    assert len(r99.signal) == 4000 and r99.rpm == 1750 and r99.load_hp == 2 and r99.fs == 48000


def test_single_variable_x_form(cwru_dir: Path, tmp_path: Path) -> None:
    rec = load_recording(cwru_dir / "mat" / "normal_1_98_x_only.mat")
    assert (rec.class_name, rec.fs, rec.load_hp) == ("normal", 48000.0, 1)
    assert 1700 < rec.rpm < 1800
    bare = tmp_path / "recording.mat"
    shutil.copy(cwru_dir / "mat" / "normal_1_98_x_only.mat", bare)
    with pytest.raises(DataError, match="recording.mat.*fs unknown"):
        load_recording(bare)
    r = load_recording(bare, fs=48000, label="normal", rpm=1772)
    assert r.fs == 48000 and len(r.signal) == len(rec.signal)


def test_bad_files_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "12k_Drive_End_IR007_0_105.mat"
    garbage.write_bytes(b"this is not matlab" * 20)
    with pytest.raises(DataError, match="12k_Drive_End_IR007_0_105.mat.*not a readable MATLAB"):
        load_recording(garbage)
    no_de = tmp_path / "12k_Drive_End_B007_0_118.mat"
    scipy.io.savemat(str(no_de), {"X118_FE_time": np.zeros((100, 1))})
    with pytest.raises(DataError, match=r"X118_FE_time.*expected X118_DE_time"):
        load_recording(no_de)
    with pytest.raises(DataError, match="not found"):
        load_recording(tmp_path / "missing.npz")
    bad_npz = tmp_path / "x.npz"
    np.savez(bad_npz, signal=np.zeros(10, np.float32))
    with pytest.raises(DataError, match="lacks keys"):
        load_recording(bad_npz)
    with pytest.raises(DataError, match="suffix"):
        load_recording(tmp_path.joinpath("a.csv").resolve() if tmp_path.joinpath("a.csv").write_text("1") else "")


def test_load_dir_counts_bad_files_and_keeps_the_rest(cwru_dir: Path, tmp_path: Path) -> None:
    for name in ("IR007_load0_12k_DE_105.npz", "normal_load0_48k_DE_97.npz"):
        shutil.copy(cwru_dir / name, tmp_path / name)
    (tmp_path / "broken.mat").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="broken.mat"):
        load_dir(tmp_path)
    errors: list[DataError] = []
    recs = load_dir(tmp_path, errors=errors, fs=12000)
    assert len(recs) == 2 and len(errors) == 1 and all(r.fs == 12000 for r in recs)
    assert [r.class_name for r in load_dir(tmp_path, ("normal", "B007"), errors=[])] == ["normal"]


def test_load_dir_real_data(cwru_dir: Path) -> None:
    recs = load_dir(cwru_dir)
    assert len(recs) == 63
    assert {r.fs for r in recs} == {12000.0, 48000.0}
    assert all(r.rpm > 1700 for r in recs)  # the 0.028 in files carry no RPM: nominal by load
    assert len(load_dir(cwru_dir, ("normal", "OR"))) == 3 + 28  # 7 OR groups (3 positions) x 4 loads


def test_resample_48k_to_12k(cwru_dir: Path) -> None:
    rec = load_recording(cwru_dir / "normal_load0_48k_DE_97.npz")
    r12 = resample(rec, 12000)
    assert r12.fs == 12000 and abs(len(r12.signal) - len(rec.signal) / 4) <= 1
    assert r12.signal.dtype == np.float32
    # power is kept (the normal baseline has little energy above 6 kHz)
    assert np.var(r12.signal) == pytest.approx(np.var(rec.signal), rel=0.1)
    assert resample(rec, 48000) is rec
    # no small exact ratio: the nearest ratio with terms <= 1000 (rate error < 1e-4) is used
    odd = resample(rec, 12345.678)
    assert odd.fs == 12345.678 and abs(len(odd.signal) / len(rec.signal) / (12345.678 / 48000) - 1) < 1e-4
    with pytest.raises(DataError, match="Hz"):
        resample(rec, -5.0)


def test_other_rigs_load_with_their_geometry(bearings_dir: Path) -> None:
    recs = load_dir(bearings_dir)  # one folder per rig, read one level down
    rigs = {r.rig for r in recs}
    assert rigs == {"hit-sq", "hit-sb", "mfpt"}
    mfpt = [r for r in recs if r.rig == "mfpt"]
    assert {r.class_name for r in mfpt} == {"normal", "IR", "OR"}  # no fault size: the bare type
    g = mfpt[0].geometry.frequencies(mfpt[0].rpm)
    assert g.bpfo == pytest.approx(81.125, rel=2e-3) and g.bpfi == pytest.approx(118.875, rel=2e-3)
    r12 = resample(mfpt[0], 12000.0)  # 48,828 Hz has no small exact ratio to 12 kHz
    assert r12.fs == 12000.0 and abs(len(r12.signal) / len(mfpt[0].signal) - 12000 / 48828) < 1e-4
    hit = load_dir(bearings_dir / "hit-sq")
    assert all(r.geometry.n_balls == 9 and r.rig == "hit-sq" for r in hit) and len(hit) == 21
