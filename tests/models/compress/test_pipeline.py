from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgevib.models.cnn import CNNModel
from edgevib.models.compress import arch, onnxio, pipeline, slimming, table
from edgevib.models.compress.errors import CompressError

from .conftest import CLASSES, W

FAST = {"sparse_steps": 10, "kd_steps": 30, "synth_per_class": 4, "synth_steps": 10, "calib_windows": 16,
        "prune_ratio": 0.25}


def test_recipe_parsing() -> None:
    assert pipeline.parse_recipe("int8, merge,slim") == ["slim", "merge", "int8"]
    for bad in ("slim,prune", "merge,kd", ""):
        with pytest.raises(CompressError, match="recipe"):
            pipeline.parse_recipe(bad)


def test_command_line_options_take_their_field_types_and_name_the_fix() -> None:
    assert pipeline.parse_options(["keep_width=16", "prune_ratio=0.3", "dfq_per_channel=false"]) == {
        "keep_width": 16, "prune_ratio": 0.3, "dfq_per_channel": False}
    for bad, fix in (("keep_width=16.5", "keep_width takes an integer"), ("noise_teacher=maybe", "takes true or false"),
                     ("keep_widht=16", "K one of prune_ratio"), ("kd_steps", "give K=V")):
        with pytest.raises(CompressError, match=fix):
            pipeline.parse_options([bad])


def test_the_cli_passes_options_to_the_pipeline(tmp_path: Path, trained_net: Any, capsys: Any) -> None:
    import argparse

    from edgevib.models.compress import cli

    ck = arch.save_checkpoint(CNNModel(trained_net, CLASSES), tmp_path / "t.pt",
                              onnxio.base_meta(CLASSES, 12000, W, "cnn", trained_on="synthetic tones"))
    p = cli.add_parser(argparse.ArgumentParser().add_subparsers())
    fast = [f"--opt={k}={v}" for k, v in {**FAST, "prune_ratio": None}.items() if v is not None]
    args = p.parse_args(["--model", str(ck), "--data-free", "--out", str(tmp_path / "s.onnx"), "--recipe",
                         "slim,kd", *fast, "--opt", "sparse_steps=0", "--opt", "keep_width=4", "--opt", "keep_hidden=8"])
    assert cli.run(args) == 0
    proto = onnxio.onnx.load(str(tmp_path / "s.onnx"))
    first = next(i for i in proto.graph.initializer if len(i.dims) == 3)  # the first conv's weight [out, 1, k]
    assert first.dims[0] == 4, "keep_width reached the pipeline"
    bad = p.parse_args(["--model", str(ck), "--data-free", "--out", str(tmp_path / "b.onnx"), "--opt", "kd_step=1"])
    assert cli.run(bad) == 2 and "kd_step=1" in capsys.readouterr().out


def test_run_real_windows_gives_every_stage(trained_net: Any, tiny_ws: Any) -> None:
    stages = pipeline.run(CNNModel(trained_net, CLASSES), "slim,merge,kd,int8", train=tiny_ws, **FAST)
    names = [s.name for s in stages]
    assert names == ["cnn", "cnn+slim(pruned)", "cnn+slim+merge", "cnn+slim+merge+kd", "cnn+slim+merge+kd+int8"]
    assert arch.n_params(stages[-2].net) < arch.n_params(stages[0].net)
    assert onnxio.read_meta(stages[-1].proto)["edgevib.arch"] == names[-1]
    acc = np.mean(table.predict(table.session(stages[-1].proto), tiny_ws.x3d()) == tiny_ws.y)
    assert acc > 1 / len(CLASSES)  # better than chance after all steps


def test_slim_without_sparsity_training_keeps_fixed_widths_of_the_teacher(trained_net: Any, tiny_ws: Any) -> None:
    teacher = CNNModel(trained_net, CLASSES)
    with pytest.raises(CompressError, match="keep_width"):
        pipeline.run(teacher, "slim,kd", train=tiny_ws, **{**FAST, "sparse_steps": 0, "prune_ratio": None})
    stages = pipeline.run(teacher, "slim,merge,kd", train=tiny_ws,
                          **{**FAST, "sparse_steps": 0, "keep_width": 4, "keep_hidden": 8})
    kw = arch.arch_kwargs(stages[-1].net)
    assert kw["widths"] == [4] * len(kw["widths"]) and kw["hidden"] == 8
    # no sparsity training: the pruned stage holds the teacher's own top-|gamma| channels of the first conv
    unit = slimming.units(trained_net)[0]
    top = np.sort(np.argsort(-unit.bn.weight.detach().abs().numpy())[:4])
    pruned = slimming.units(stages[1].net)[0]
    assert np.allclose(pruned.bn.weight.detach().numpy(), unit.bn.weight.detach().numpy()[top])


def test_compress_checkpoint_data_free_writes_the_contract(tmp_path: Path, trained_net: Any) -> None:
    ck = arch.save_checkpoint(CNNModel(trained_net, CLASSES), tmp_path / "t.pt",
                              onnxio.base_meta(CLASSES, 12000, W, "cnn", trained_on="synthetic tones"))
    out = pipeline.compress(ck, "slim,merge,kd,int8", data_free=True, out=tmp_path / "small.onnx", **FAST)
    meta = onnxio.read_meta(out)
    assert meta["edgevib.arch"] == "cnn+slim+merge+kd+int8"
    assert json.loads(meta["edgevib.classes"]) == list(CLASSES) and meta["edgevib.window"] == str(W)
    assert "data-free" in meta["edgevib.trained_on"]
    sess = table.session(onnxio.onnx.load(str(out)))
    probs = sess.run(["probs"], {"x": np.zeros((2, 1, W), np.float32) + 0.1})[0]
    assert probs.shape == (2, len(CLASSES))


def test_compress_rejects_bad_requests(tmp_path: Path, trained_net: Any) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnxio.save(CNNModel(trained_net, CLASSES).to_onnx(), onnxio.base_meta(CLASSES, 12000, W, "cnn"), onnx_path)
    with pytest.raises(CompressError, match="need the torch checkpoint"):
        pipeline.compress(onnx_path, "slim,int8", data_free=True, out=tmp_path / "x.onnx")
    with pytest.raises(CompressError, match="exactly one of --data DIR or --data-free"):
        pipeline.compress(onnx_path, "int8", out=tmp_path / "x.onnx")
    with pytest.raises(CompressError, match="prune_typo"):
        pipeline.run(CNNModel(trained_net, CLASSES), "slim", data_free=True, prune_typo=1)


def test_compress_finds_the_trainer_in_the_arch_registry(tmp_path: Path, trained_net: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Which steps apply and how a checkpoint loads come from models.arch, not from the pipeline."""
    import dataclasses

    from edgevib.models import arch as registry

    onnx_path = tmp_path / "m.onnx"
    net = CNNModel(trained_net, CLASSES).to_onnx()
    onnxio.save(net, onnxio.base_meta(CLASSES, 12000, W, "faulttype-lr"), onnx_path)
    with pytest.raises(CompressError, match="faulttype model .* takes no compression step"):
        pipeline.compress(onnx_path, "int8", data_dir=tmp_path, out=tmp_path / "x.onnx")
    onnxio.save(net, onnxio.base_meta(CLASSES, 12000, W, "lstm+int8"), onnx_path)
    with pytest.raises(CompressError, match="arch 'lstm\\+int8', which no trainer registers"):
        pipeline.compress(onnx_path, "int8", data_dir=tmp_path, out=tmp_path / "x.onnx")
    # a registry entry that allows fewer steps is obeyed for a .pt checkpoint too
    ck = arch.save_checkpoint(CNNModel(trained_net, CLASSES), tmp_path / "t.pt")
    monkeypatch.setitem(registry._REGISTRY, "cnn", dataclasses.replace(registry.get("cnn"), compress=("int8", "dfq")))
    with pytest.raises(CompressError, match="step\\(s\\) slim for a cnn model .* takes int8,dfq"):
        pipeline.compress(ck, "slim,int8", data_free=True, out=tmp_path / "x.onnx")
    out = pipeline.compress(ck, "dfq", out=tmp_path / "q.onnx")  # loaded by the registered checkpoint reader
    assert onnxio.read_meta(out)["edgevib.arch"].endswith("+dfq")
