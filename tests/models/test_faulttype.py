"""Order features, the fault-type model, its two-input ONNX contract, and leave-one-rig-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.errors import ModelError
from edgevib.edge.runtime import OnnxModel
from edgevib.models.bearing import CWRU_DE_6205, DG_6308, BearingGeometry
from edgevib.models.contract import AUX_INPUT, ModelMeta, check_contract, save
from edgevib.models.errors import ContractError, ModelsError
from edgevib.models.faulttype import (
    CLASSES,
    HOP,
    KIND,
    WINDOW,
    FeatureSet,
    features_of,
    fit_temperature,
    simulated,
    train,
)
from edgevib.models.orders import FEATURES, fault_frequencies, order_features
from edgevib.models.simulate import simulate

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo" / "faulttype.onnx"


def _feat(fault: str, geometry: BearingGeometry, rpm: float, seed: int = 3) -> np.ndarray:
    x = simulate(fault, duration_s=1.0, rpm=rpm, geometry=geometry, noise_g=0.02, seed=seed)[:WINDOW]
    return order_features(x[None, :], 12000.0, fault_frequencies(geometry, rpm))[0]


@pytest.mark.parametrize(("fault", "line"), [("OR", "bpfo1"), ("IR", "bpfi1"), ("B", "re1")])
@pytest.mark.parametrize(("geometry", "rpm"), [(CWRU_DE_6205, 1797.0), (DG_6308, 900.0)])
def test_the_fault_line_stands_out_on_any_bearing_and_speed(fault: str, line: str, geometry: BearingGeometry,
                                                            rpm: float) -> None:
    f = dict(zip(FEATURES, _feat(fault, geometry, rpm), strict=True))
    others = {"bpfo1", "bpfi1", "re1"} - {line}
    assert f[line] > 1.0 and all(f[line] > f[o] for o in others), f


def test_features_ignore_gain_and_reject_bad_windows() -> None:
    x = simulate("IR", duration_s=1.0, seed=2)[: 2 * 4096].reshape(2, 4096)
    fr = fault_frequencies(CWRU_DE_6205, 1797.0)
    assert np.allclose(order_features(x, 12000.0, fr), order_features(1e-3 * x - 5, 12000.0, fr), atol=1e-3)
    with pytest.raises(ModelsError, match="W >= 256"):
        order_features(x[:, :100], 12000.0, fr)
    bad = x.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ModelsError, match="NaN"):
        order_features(bad, 12000.0, fr)
    with pytest.raises(ModelsError, match="rpm"):
        fault_frequencies(CWRU_DE_6205, 0.0)


def test_temperature_fit_sharpens_underconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    logits = np.eye(4)[y] * 0.5 + rng.normal(0, 0.05, (400, 4))  # always right, but only ~40 % sure
    assert fit_temperature(logits, y, np.ones(400)) < 0.6


@pytest.fixture(scope="module")
def sim_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureSet]:
    data = features_of(simulated(48, seed=7))
    model = train(data)
    path = tmp_path_factory.mktemp("ft") / "ft.onnx"
    save(model.to_onnx(), ModelMeta(CLASSES, 12000.0, WINDOW, HOP, model.arch, "t", "sim", {}, KIND), path)
    return path, data


def test_two_input_model_meets_the_contract_and_needs_its_context(sim_model: tuple[Path, FeatureSet]) -> None:
    path, _ = sim_model
    meta = check_contract(path)
    assert meta.aux_input == KIND and meta.aux_size == len(FEATURES) and meta.window == WINDOW
    m = OnnxModel(path)
    x = np.stack([simulate(f, duration_s=1.0, rpm=1500, geometry=DG_6308, seed=i)[:WINDOW]
                  for i, f in enumerate(CLASSES)])[:, None, :]
    ctx = [fault_frequencies(DG_6308, 1500.0)] * 4
    p = m.predict(x, ctx)
    assert p.shape == (4, 4) and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert list(p.argmax(axis=1)) == [0, 1, 2, 3]  # each simulated fault named on a bearing of its own
    with pytest.raises(ModelError, match="fault frequencies"):
        m.predict(x)
    with pytest.raises(ContractError, match="aux_input"):
        ModelMeta(CLASSES, aux_input="edgevib.unknown/9")


def test_single_input_metadata_round_trips_without_aux() -> None:
    props = ModelMeta(CLASSES).to_props()
    assert "edgevib.aux_input" not in props and ModelMeta.from_props(props).aux_size == 0
    assert AUX_INPUT == "orders"


def test_shipped_fault_type_model(tmp_path: Path) -> None:
    meta = check_contract(ZOO)
    assert meta.classes == CLASSES and meta.aux_input == KIND
    m = OnnxModel(ZOO)
    geo = BearingGeometry(12, 11.0, 58.0, 0.0, "unseen")  # no rig or test here has it
    for i, fault in enumerate(CLASSES):
        x = simulate(fault, duration_s=2.0, rpm=1234.0, geometry=geo, noise_g=0.02, seed=40 + i)
        w = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP][:, None, :]
        p = m.predict(np.ascontiguousarray(w), [fault_frequencies(geo, 1234.0)] * len(w))
        assert CLASSES[int(p.mean(axis=0).argmax())] == fault


@pytest.mark.data
@pytest.mark.slow
def test_leave_one_rig_out_on_four_real_rigs(cwru_dir: Path, bearings_dir: Path) -> None:
    from edgevib.models.data import load_dir
    from edgevib.models.rigout import rig_out

    real = features_of(load_dir(cwru_dir) + load_dir(bearings_dir))
    res = rig_out(real, features_of(simulated(240)))
    r = res["rigs"]
    assert set(r) == {"cwru", "hit-sq", "hit-sb", "mfpt"}
    # measured 2026-12 (docs/transfer.md): 90.5 % mean recordings; CWRU 66.7 % (ball faults)
    assert res["mean"]["recording_acc"] >= 0.85 and res["mean"]["window_acc"] >= 0.85
    assert all(r[k]["recording_acc"] >= 0.9 for k in ("hit-sq", "hit-sb", "mfpt"))
    assert all(v["healthy_false_fault_recordings"] == 0 for v in r.values())
    assert res["rms_baseline"]["mean"] < 0.5  # the level alone cannot do it: the features are not gain
