"""The generator-based data-free paths: KegNet windows and ZAQ fine-tuning, on tiny nets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import dfq, kegnet, onnxio, pipeline, table, zaq
from edgevib.models.compress.errors import CompressError

from .conftest import CLASSES, W


def test_diversity_loss_prefers_spread_windows() -> None:
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    same = torch.ones(8, 1, 64)
    spread = torch.randn(8, 1, 64, generator=torch.Generator().manual_seed(1))
    assert float(kegnet.diversity_loss(spread, z)) < float(kegnet.diversity_loss(same, z))


def test_kegnet_generators_learn_the_teachers_classes(trained_net: Any) -> None:
    x, y = kegnet.synthesize(trained_net, 6, steps=120, n_generators=2, ch=8, seed=0)
    assert x.shape == (18, 1, W) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert np.bincount(y).tolist() == [6, 6, 6]
    with torch.no_grad():
        pred = trained_net(torch.from_numpy(x)).argmax(1).numpy()
    assert np.mean(pred == y) >= 0.6  # chance is 1/3
    assert all(p.requires_grad for p in trained_net.parameters())  # teacher restored
    with pytest.raises(CompressError, match="window=1000"):
        kegnet.Generator(3, 1000)


def test_kegnet_as_the_data_free_source_of_the_pipeline(trained_net: Any) -> None:
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,merge,kd", data_free=True, synth="kegnet",
                          kegnet_steps=5, synth_per_class=3, sparse_steps=5, kd_steps=5, prune_ratio=0.25)
    assert stages[-1].name == "cnn+slim+merge+kd"
    with pytest.raises(CompressError, match="synth='gan'"):
        pipeline.run(CNNModel(trained_net, CLASSES), "dfq", data_free=True, synth="gan")


def test_zaq_trains_the_int8_copy_and_exports(trained_net: Any, tiny_ws: Any) -> None:
    ref = {k: v.clone() for k, v in dfq.dfq(trained_net)[0].state_dict().items()}
    q_net, stats, info = zaq.zaq(trained_net, steps=15, batch=8, lr_q=1e-3, seed=0)
    moved = [k for k, v in q_net.state_dict().items() if not torch.equal(v, ref[k])]
    assert moved and all(".bn" not in k and "head.2" not in k for k in moved)  # identity BNs untouched
    assert "no real window" in info["saw"] and np.isfinite(info["disagreement_last"])
    model = CNNModel(trained_net, CLASSES)
    meta = onnxio.base_meta(CLASSES, 12000, W, "cnn")
    proto = dfq.quantize_data_free(pipeline._onnx(q_net, model, meta, "cnn"), q_net, stats)
    pred = table.predict(table.session(proto), tiny_ws.x3d())
    assert np.mean(pred == tiny_ws.y) > 0.5  # chance is 1/3
    stages = pipeline.run(model, "zaq", data_free=True, zaq_steps=3)
    assert [s.name for s in stages] == ["cnn", "cnn+zaq"]


def test_feature_relation_is_zero_for_equal_features() -> None:
    f = torch.randn(6, 4, 10)
    assert float(zaq.relation(f).shape[0]) == 6
    assert float(zaq.discrepancy(torch.zeros(6, 3), torch.zeros(6, 3), [f], [f], 1.0)) == 0.0
    with pytest.raises(CompressError, match="batch=1"):
        zaq.zaq(torch.nn.Linear(2, 2), steps=1, batch=1)
