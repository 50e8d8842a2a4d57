"""DFQ: the equalisation invariant, high-bias absorption, bias correction, INT8 without windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.cnn import CNNModel, build_wdcnn
from edgevib.models.compress import arch, datafree, dfq, onnxio, pipeline, table
from edgevib.models.compress.errors import CompressError
from edgevib.models.compress.slimming import units

from .conftest import CLASSES, W, randomise_bn


def _x(n: int = 16, seed: int = 0) -> Any:
    return torch.randn(n, 1, W, generator=torch.Generator().manual_seed(seed))


def _uneven(net: Any) -> Any:
    """Channels of very different weight ranges, where one int8 grid per tensor fits badly."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for u in units(net):
            n = u.producer.weight.shape[0]
            u.producer.weight.mul_((10 ** (torch.rand(n, generator=g) * 2 - 1)).reshape((-1,) + (1,) * (u.producer.weight.dim() - 1)))
    return net


def test_fold_and_equalise_keep_the_float_function(tiny_net: Any) -> None:
    net = _uneven(tiny_net)
    x = _x()
    with torch.no_grad():
        ref = net(x)
        folded, stats = dfq.fold_bn(net)
        assert torch.allclose(folded(x), ref, atol=1e-4, rtol=1e-4)
        scales = dfq.equalize(folded, stats, iters=100)
        out = folded(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)  # the invariant: same float output
    assert any(np.max(np.abs(np.log(s))) > 0.1 for s in scales)  # ... although weights really moved
    for u in units(folded):  # and every channel now has the same range in both layers
        r1 = u.producer.weight.reshape(u.producer.weight.shape[0], -1).abs().amax(1)
        r2 = dfq._consumer_cols(u).abs().amax(dim=(0, 2))
        assert torch.allclose(r1, r2, rtol=1e-3)
    for bn in (u.bn for u in units(folded)):  # the BNs are identities now
        assert torch.allclose(bn(torch.ones(2, bn.num_features)), torch.ones(2, bn.num_features), atol=1e-6)


def _precision(net: Any) -> float:
    """Nagel et al.'s objective: sum over channels of ``p1 * p2``, ``p = r_c / R`` the fraction
    of the per-tensor int8 grid channel ``c`` uses in its producer and in its consumer."""
    total = 0.0
    for u in units(net):
        r1 = u.producer.weight.reshape(u.producer.weight.shape[0], -1).abs().amax(1)
        r2 = dfq._consumer_cols(u).abs().amax(dim=(0, 2))
        total += float(((r1 / r1.max()) * (r2 / r2.max())).sum().detach())
    return total


def test_equalisation_raises_per_tensor_precision(tiny_net: Any) -> None:
    folded, stats = dfq.fold_bn(_uneven(tiny_net))
    before = _precision(folded)
    dfq.equalize(folded, stats)
    assert _precision(folded) > 1.3 * before


def test_high_bias_absorption_moves_a_sure_offset_into_the_next_layer(tiny_net: Any) -> None:
    _, bn, _ = arch.head_layers(tiny_net)
    with torch.no_grad():
        fc1 = arch.head_layers(tiny_net)[0]
        fc1.weight.mul_(1e-3)  # the hidden pre-activations sit at beta +- tiny
        bn.bias.fill_(5.0)
        bn.weight.fill_(0.1)
    folded, stats = dfq.fold_bn(tiny_net)
    x = _x()
    with torch.no_grad():
        ref = folded(x)
        h = dfq.absorb_high_bias(folded, stats, sigmas=3.0)
        out = folded(x)
    assert np.allclose(h[-1], 5.0 - 0.3, atol=1e-6)  # max(0, beta - 3 |gamma|)
    assert np.allclose(stats[-1].mu, 0.3, atol=1e-6)
    assert torch.allclose(out, ref, atol=1e-4)


def test_relu_means_match_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    mu, sd = np.array([-1.0, 0.0, 0.7]), np.array([0.5, 1.0, 2.0])
    z = mu + sd * rng.standard_normal((200_000, 2, 3))
    assert np.allclose(dfq.mean_relu(mu, sd), np.maximum(z[:, 0], 0).mean(0), atol=0.01)
    assert np.allclose(dfq.mean_relu_max2(mu, sd), np.maximum(z.max(1), 0).mean(0), atol=0.01)


def test_bias_correction_removes_the_expected_int8_shift(tiny_net: Any) -> None:
    folded, stats = dfq.fold_bn(tiny_net)
    fc2 = arch.head_layers(folded)[2]
    st = stats[-1]
    rng = np.random.default_rng(0)
    h = torch.from_numpy(np.maximum(st.mu + st.sd * rng.standard_normal((50_000, len(st.mu))), 0)).float()
    with torch.no_grad():
        ref = (h @ fc2.weight.t() + fc2.bias).mean(0)

        def shift() -> float:
            return float(((h @ dfq.fake_quant_weight(fc2.weight, False).t() + fc2.bias).mean(0) - ref).abs().sum())

        before = shift()
        dfq.correct_bias(folded, stats, per_channel=False)
        after = shift()
    assert after < 0.25 * before


def test_quantize_data_free_is_int8_and_agrees_with_float(trained_net: Any, tiny_ws: Any) -> None:
    model = CNNModel(trained_net, CLASSES)
    meta = onnxio.base_meta(CLASSES, 12000, W, "cnn")
    net, stats = dfq.dfq(trained_net)
    proto = dfq.quantize_data_free(pipeline._onnx(net, model, meta, "cnn"), net, stats)
    assert "QuantizeLinear" in {n.op_type for n in proto.graph.node}
    assert onnxio.read_meta(proto)["edgevib.arch"] == "cnn+dfq"
    x = tiny_ws.x3d()
    q = table.predict(table.session(proto), x)
    f = table.predict(table.session(pipeline._onnx(trained_net, model, meta, "cnn")), x)
    assert np.mean(q == f) >= 0.9


def test_dfq_recipe_needs_no_windows(tmp_path: Path, trained_net: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_synthesis(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("dfq must not synthesise windows")

    monkeypatch.setattr(datafree, "synthesize", no_synthesis)
    ck = arch.save_checkpoint(CNNModel(trained_net, CLASSES), tmp_path / "t.pt",
                              onnxio.base_meta(CLASSES, 12000, W, "cnn"))
    out = pipeline.compress(ck, "dfq", out=tmp_path / "q.onnx")
    assert onnxio.read_meta(out)["edgevib.arch"] == "cnn+dfq"
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "dfq", data_free=True)
    assert [s.name for s in stages] == ["cnn", "cnn+dfq"] and "BN statistics" in stages[-1].info["saw"]


def test_dfq_rejects_the_envelope_branch_and_bad_config() -> None:
    net = randomise_bn(build_wdcnn(3, (8, 8, 8, 8, 8), hidden=12, window=W, pool_out=2, envelope=2))
    with pytest.raises(CompressError, match="envelope"):
        dfq.fold_bn(net)
    with pytest.raises(CompressError, match="range_sigmas"):
        dfq.DFQConfig(range_sigmas=0)
