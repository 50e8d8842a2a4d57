"""WDCNN: ONNX export matches torch, normalisation is in the graph, bad input is refused,
and a short training on real CWRU classes beats chance on the time split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from edgevib.models import cnn
from edgevib.models.augment import AugmentConfig
from edgevib.models.errors import ModelsError
from edgevib.models.split import WindowSet

CLASSES = ("normal", "B007", "IR007")


def _model(widths: tuple[int, ...] = cnn.WIDTHS, envelope: int = 4) -> cnn.CNNModel:
    torch.manual_seed(0)
    net = cnn.build_wdcnn(len(CLASSES), widths, envelope=envelope)
    # Non-trivial batch-norm statistics, so the export must carry them correctly.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return cnn.CNNModel(net.eval(), CLASSES)


def _synthetic(rng: np.random.Generator, n_per: int = 12, w: int = 2048) -> WindowSet:
    """One contiguous recording per class: a tone at a class-specific frequency, in noise."""
    xs, ys, rs, ss = [], [], [], []
    for c in range(len(CLASSES)):
        t = np.arange((n_per + 1) * w // 2 + w) / 12000.0
        sig = 0.3 * np.sin(2 * np.pi * (500 + 1500 * c) * t) + 0.1 * rng.standard_normal(t.size)
        starts = np.arange(n_per) * (w // 2)
        xs.append(np.stack([sig[s:s + w] for s in starts]))
        ys += [c] * n_per
        rs += [c] * n_per
        ss.append(starts)
    return WindowSet(np.concatenate(xs).astype(np.float32), np.array(ys), CLASSES, np.array(rs),
                     np.concatenate(ss), tuple(f"rec{c}" for c in range(len(CLASSES))), 12000.0,
                     np.full(len(ys), 1797.0))


@pytest.mark.parametrize("envelope", [4, 0])
def test_onnx_matches_torch_with_dynamic_batch(rng: np.random.Generator, envelope: int) -> None:
    m = _model(envelope=envelope)
    proto = m.to_onnx()
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["probs"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = (rng.standard_normal((n, 1, 2048)) * 2.0 + 0.5).astype(np.float32)  # raw g, offset
        got = sess.run(["probs"], {"x": x})[0]
        want = m.predict_proba(x)
        assert got.shape == (n, len(CLASSES))
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_normalisation_is_inside_the_graph(rng: np.random.Generator) -> None:
    m = _model()
    x = rng.standard_normal((4, 1, 2048)).astype(np.float32)
    np.testing.assert_allclose(m.predict_proba(x * 7.5 + 3.0), m.predict_proba(x), atol=1e-4)


def test_widths_are_configurable_for_slimming() -> None:
    big, small = cnn.build_wdcnn(10, envelope=0), cnn.build_wdcnn(10, (8, 16, 32, 32, 32), envelope=0)
    n_big = sum(p.numel() for p in big.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert 40_000 < n_big < 65_000 and n_small < n_big / 2  # WDCNN trunk + head: ~61k
    assert [b[1].num_features for b in small.blocks] == [8, 16, 32, 32, 32]
    rebuilt = cnn.build_wdcnn(**small.config)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in small.parameters()]
    assert _model((8, 16, 32, 32, 32)).predict_proba(np.zeros((2, 1, 2048), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(4, 2048), (4, 2, 2048), (4, 1, 1024), (2048,)])
def test_bad_shapes_raise_clear_errors(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelsError, match=r"models\.cnn: input of shape .*fix: pass float32 \[N, 1, 2048\]"):
        _model().predict_proba(np.zeros(shape, np.float32))


def test_non_finite_input_and_bad_options_are_refused(rng: np.random.Generator) -> None:
    x = np.zeros((2, 1, 2048), np.float32)
    x[1, 0, 5] = np.nan
    with pytest.raises(ModelsError, match="NaN"):
        _model().predict_proba(x)
    with pytest.raises(ModelsError, match="widths"):
        cnn.build_wdcnn(10, (16, 0, 8))
    ws = _synthetic(rng)
    with pytest.raises(ModelsError, match="no_such_option"):
        cnn.train(ws, no_such_option=1)
    with pytest.raises(ModelsError, match="augment='heavy'"):
        cnn.train(ws, augment="heavy")
    assert cnn.TrainOptions(augment="none").augment == AugmentConfig.none()  # type: ignore[arg-type]
    with pytest.raises(ModelsError, match="epochs=0"):
        cnn.train(ws, epochs=0)
    with pytest.raises(ModelsError, match="at least two classes"):
        cnn.train(ws.subset(ws.y == 0))


def test_training_is_seeded_and_learns_synthetic_tones(rng: np.random.Generator) -> None:
    ws = _synthetic(rng)
    kw = {"epochs": 2, "steps_per_epoch": 10, "batch_size": 32}
    a = cnn.train(ws, seed=1, epochs=1, steps_per_epoch=4, batch_size=16)
    b = cnn.train(ws, seed=1, epochs=1, steps_per_epoch=4, batch_size=16)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    seen: list[tuple[int, int]] = []
    c = cnn.train(ws, seed=2, progress=lambda d, t, msg="": seen.append((d, t)), **kw)
    assert seen[-1] == (2, 2) and len(c.history) == 2
    assert c.arch == "cnn" and c.classes == CLASSES
    assert (c.predict_proba(ws.x3d()).argmax(1) == ws.y).mean() > 0.9


@pytest.mark.data
@pytest.mark.slow
def test_short_training_on_real_classes_beats_chance_on_time_split(cwru_dir: Path) -> None:
    from edgevib.models.data import load_dir
    from edgevib.models.split import time_split

    classes = ("normal", "B014", "IR014", "OR014")
    train, test = time_split(load_dir(cwru_dir, classes, fs=12000.0), classes=classes)
    m = cnn.train(train, seed=0, epochs=4, steps_per_epoch=25, batch_size=32)
    acc = float((m.predict_proba(test.x3d()).argmax(1) == test.y).mean())
    assert acc > 0.8, f"accuracy {acc:.3f} on {len(test)} held-out windows (chance 0.25)"
