"""benchmarks/rig_out_agent.py on one small rig: MFPT held out, streamed through a real agent
process on a real Mosquitto. Checks what must hold whatever the accuracy (the benchmark reports
accuracy, it does not assert it): every recording streamed and accounted for, the fold model
never trained on MFPT, and the counts consistent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from edgevib.models.contract import read_meta

from edgevib.broker import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.data]
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "rig_out_agent.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rig_out_agent", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mfpt_held_out_through_the_agent(broker: MosquittoProcess, cwru_dir: Path, bearings_dir: Path,
                                         tmp_path: Path) -> None:
    b = _bench()
    data = b.load_rigs(b.rig_dirs(cwru_dir, bearings_dir))
    assert len(data["mfpt"]) == 17
    train = {r: b.features_of(recs) for r, recs in data.items() if r != "mfpt"}
    sim = b.features_of(b.simulated(b.SIM_RECORDINGS, 0))  # the benchmark's own fold model
    fold = b.run_fold("mfpt", data["mfpt"], train, sim, broker.url, tmp_path)

    # the fold model never saw MFPT
    meta = read_meta(tmp_path / "fold-mfpt.onnx")
    assert "mfpt" not in meta.trained_on and "mfpt" not in fold["train_rigs"]
    assert all(r in meta.trained_on for r in ("cwru", "hit-sq", "hit-sb"))
    assert meta.aux_input and meta.classes == ("normal", "B", "IR", "OR")

    # every recording streamed whole, taken in by the agent and inferred, nothing dropped
    recs = fold["recordings"]
    assert len(recs) == 17 and {r["source"] for r in recs} == {r.source for r in data["mfpt"]}
    assert fold["drained"] and fold["drops"] == {} and fold["agent_exit"] == 0
    assert fold["frames_in"] == fold["frames_sent"] == sum(r["frames_sent"] for r in recs)
    for r in recs:
        assert r["frames_in"] == r["frames_sent"] > 0 and r["gaps"] == 0, r
        assert r["windows"] and r["windows"] > 0, r
        assert r["signal_s"] > 2.5, r  # MFPT: 3 s recordings (baselines 6 s), every sample sent

    # every recording got a verdict or a counted miss; the numbers are consistent
    for r in recs:
        if r["raised"]:
            assert r["latency_s"] is not None and 0 < r["latency_s"] <= r["signal_s"] + 1e-6, r
            assert r["model_type"] in ("B", "IR", "OR") and r["fused_type"] in ("B", "IR", "OR", "unknown"), r
        else:
            assert r["latency_s"] is None and not r["model_right"] and not r["fused_right"], r
    s = fold["summary"]
    assert s["recordings"] == 17 == s["fault_recordings"] + s["healthy_recordings"]
    assert s["healthy_recordings"] == 3 and s["streamed_complete"] == 17
    for right in ("model_type_right", "fused_type_right"):
        assert 0 <= s[right] <= s["raised"] <= s["fault_recordings"]
    assert s["raised_within_target"] <= s["raised"]
    assert 0 <= s["healthy_false_alerts"] <= s["healthy_recordings"]
    assert s["raised"] == sum(r["raised"] for r in recs if r["type"] != "normal")
    assert s["fused_type_right"] == sum(v["fused_right"] for v in s["per_class"].values())
    assert b.table_row("mfpt", fold).startswith("mfpt")
