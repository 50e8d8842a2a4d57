"""The model-update wire format: sign/verify, chunking, the bounded assembler, the agent's updater."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgevib.edge.agent import Agent
from edgevib.edge.config import describe, load_agent_config
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.outbox import Outbox
from edgevib.edge.runtime import OnnxModel
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevib import protocol as proto
from edgevib.errors import ConfigError
from edgevib.protocol.frames import Frame, encode
from edgevib.protocol.updates import (
    Assembler,
    Manifest,
    Rejected,
    Rollback,
    Update,
    UpdateError,
    canonical,
    encode_install,
    encode_rollback,
    key_id,
    sign,
    verify,
)
from tests.edge.tinymodels import tiny_onnx

T = proto.Topics("plant", "gw")


def _manifest(data: bytes, key: Any, **kw: Any) -> Manifest:
    m = Manifest("tiny", "2", hashlib.sha256(data).hexdigest(), len(data), 1, 2048, 12000.0, ("normal", "IR007"),
                 {"acc": 0.9}, key_id(key.public_key()))
    return replace(m, **kw)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _reason(fn: Any) -> str:
    with pytest.raises(UpdateError) as e:
        fn()
    return e.value.reason


def test_canonical_is_sorted_compact_and_key_order_free() -> None:
    assert canonical({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}' == canonical({"a": [1, 2], "b": 1})


def test_verify_accepts_the_signed_bytes_and_names_each_failure(key: Ed25519PrivateKey) -> None:
    data = b"model bytes" * 100
    m = _manifest(data, key)
    sig, pub = sign(m, key), key.public_key()
    assert verify(data, m.to_dict(), sig, pub) == m
    assert _reason(lambda: verify(data[:-1] + b"X", m, sig, pub)) == "hash_mismatch"
    assert _reason(lambda: verify(data, replace(m, version="3"), sig, pub)) == "bad_signature"
    assert _reason(lambda: verify(data, m, None, pub)) == "unsigned"
    assert _reason(lambda: verify(data, m, "", pub)) == "unsigned"
    assert _reason(lambda: verify(data, m, sig, None)) == "no_key"
    assert _reason(lambda: verify(data, m, "not base64!", pub)) == "bad_signature"
    assert _reason(lambda: verify(data, m, sig, pub, max_bytes=100)) == "too_large"
    assert _reason(lambda: verify(data, {"name": "x"}, sig, pub)) == "bad_manifest"
    other = Ed25519PrivateKey.generate()
    with pytest.raises(UpdateError, match=f"signed with key {m.key_id}, this gateway trusts {key_id(other.public_key())}"):
        verify(data, m, sig, other.public_key())


def test_install_messages_stay_under_200_kb_and_reassemble_in_any_order(key: Ed25519PrivateKey) -> None:
    data = np.random.default_rng(0).bytes(500_000)
    m = _manifest(data, key)
    msgs = encode_install("u1", m, sign(m, key), data)
    assert len(msgs) == 4 and max(len(p) for p in msgs) < 200_000
    asm = Assembler(max_bytes=1 << 20)
    order = [3, 0, 0, 2, 1]  # a QoS 1 duplicate and out-of-order delivery
    got = [asm.feed(msgs[i]) for i in order]
    assert got[:-1] == [None] * 4
    up = got[-1]
    assert isinstance(up, Update) and up.data == data and up.update_id == "u1"
    assert verify(up.data, up.manifest, up.signature, key.public_key()) == m
    assert asm.garbage == {}


def test_assembler_counts_garbage_and_never_raises() -> None:
    asm = Assembler(max_bytes=1000)
    good = json.loads(encode_install("u", None, None, b"abc")[0])
    for junk in (b"\xff", b"[]", b"{}", json.dumps({**good, "schema": "x"}).encode(),
                 json.dumps({**good, "chunk": 5}).encode(), json.dumps({**good, "data": "@@"}).encode(),
                 json.dumps({**good, "action": "explode"}).encode(), json.dumps({**good, "update_id": 7}).encode()):
        assert asm.feed(junk) is None
    assert sum(asm.garbage.values()) == 8 and set(asm.garbage) == {"bad_json", "bad_schema", "bad_field"}
    assert asm.feed(encode_rollback("u9", "operator")) == Rollback("u9", "operator")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_assembler_survives_arbitrary_bytes(payload: bytes) -> None:
    assert Assembler(max_bytes=100).feed(payload) is None


def test_assembler_bounds_size_time_and_one_update_at_a_time(key: Ed25519PrivateKey) -> None:
    now = [0.0]
    data = bytes(3000)
    m = _manifest(data, key)
    asm = Assembler(max_bytes=2000, timeout_s=5, clock=lambda: now[0])
    r = asm.feed(encode_install("big", m, "sig", data, chunk_bytes=1000)[0])
    assert isinstance(r, Rejected) and r.reason == "too_large"  # the manifest claims 3000 bytes
    small = b"x" * 1500
    a, b = encode_install("a", None, None, small, chunk_bytes=1000), encode_install("b", None, None, small, 1000)
    assert asm.feed(a[0]) is None and asm.feed(b[0]) is None  # b supersedes a
    assert asm.garbage == {"superseded": 1}
    assert asm.expire() is None
    now[0] = 6.0
    r = asm.expire()
    assert isinstance(r, Rejected) and (r.update_id, r.reason) == ("b", "timeout") and asm.expire() is None
    assert asm.feed(a[1]) is None  # the rest of a, alone, is not an update


def test_update_settings_are_documented_and_validated(tmp_path: Path) -> None:
    text = describe()
    for k in ("public_key", "model_dir", "shadow_windows", "probation_batches", "max_latency_factor",
              "max_model_bytes"):
        assert f"update.{k}" in text and f"EDGEVIB_UPDATE__{k.upper()}" in text
    with pytest.raises(ConfigError, match="public_key"):
        load_agent_config(None, env={"EDGEVIB_UPDATE__PUBLIC_KEY": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="max_latency_factor"):
        load_agent_config(None, env={"EDGEVIB_UPDATE__MAX_LATENCY_FACTOR": "0.5"})


# -- the agent's updater, on the in-memory bus ------------------------------------------------------
@pytest.fixture
def rig(tmp_path: Path) -> dict[str, Any]:
    from edgevib.models.registry import Registry, keygen

    priv, pub = keygen(tmp_path / "keys")
    (tmp_path / "base.onnx").write_bytes(tiny_onnx("good", classes=("normal", "IR007", "OR007")))
    (tmp_path / "new.onnx").write_bytes(tiny_onnx("good", version="2"))
    reg = Registry(tmp_path / "reg", private_key=priv)
    reg.add(tmp_path / "new.onnx")
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", batch_size=4, heartbeat_s=3600,
                            alert={"k": 1, "n": 1, "anomaly": False, "cooldown_s": 0},
                            outbox={"path": str(tmp_path / "ob.sqlite")},
                            update={"public_key": str(pub), "model_dir": str(tmp_path / "md"), "probation_batches": 2})
    bus = MemoryBus()
    agent = Agent(cfg, OnnxModel(tmp_path / "base.onnx"), MemoryLink(bus, "agent"), Outbox(cfg.outbox.path))
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.model_status)
    return {"agent": agent, "cloud": cloud, "reg": reg, "tmp": tmp_path}


def _frames(cloud: MemoryLink, agent: Agent, n: int, amplitude: float, start: int = 0) -> None:
    t = np.arange(4096)
    for i in range(start, start + n):
        x = np.random.default_rng(i).normal(0, 0.1, 4096) + amplitude * np.sin(t / 5.0)
        cloud.publish(T.raw("de"), encode(Frame(i, i * 4096 * 10**9 // 12000, 12000.0, x.astype(np.float32))))
    for _ in range(n + 2):
        agent.step()


def _statuses(cloud: MemoryLink) -> list[dict[str, Any]]:
    out = []
    while (m := cloud.poll(0.0)) is not None:
        out.append(json.loads(m.payload))
    return out


def test_updater_swaps_between_batches_resets_stale_alerts_and_rolls_back_on_command(rig: dict[str, Any]) -> None:
    agent, cloud, entry = rig["agent"], rig["cloud"], rig["reg"].get("new")
    _frames(cloud, agent, 4, 2.0)  # loud: the base model raises IR007... an alert of a class the new model keeps
    s = agent.sensors["de"]
    assert s.alerter.active == "IR007"
    s.alerter.active = "OR007"  # pretend the active alert is of a class the new model drops
    for p in encode_install("u1", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["result"], st["sha256"], st["shadow"]["real_windows"]) == ("installed", entry.manifest.sha256, s.seen)
    assert agent.model_info["sha256"] == entry.manifest.sha256 and agent.model.meta.classes == ("normal", "IR007")
    assert s.alerter.active is None  # the OR007 state is gone with the class
    store = json.loads((rig["tmp"] / "md" / "current.json").read_text())
    assert store["active"]["version"] == "2" and store["previous"]["path"].endswith("base.onnx")
    cloud.publish(T.models, encode_rollback("rb1", "operator"), qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["update_id"], st["result"], st["reason"]) == ("rb1", "rolled_back", "requested")
    assert agent.model.meta.classes == ("normal", "IR007", "OR007")
    assert json.loads((rig["tmp"] / "md" / "current.json").read_text())["active"]["path"].endswith("base.onnx")
    cloud.publish(T.models, encode_rollback("rb2"), qos=1)  # nothing left to go back to
    agent.step()
    assert [(s["result"], s["reason"]) for s in _statuses(cloud)] == [("rejected", "no_previous")]
    assert agent.metrics.counters["updates_installed"] == 1 and agent.metrics.counters["updates_rolled_back"] == 1


def test_updater_refuses_everything_without_a_public_key(tmp_path: Path, rig: dict[str, Any]) -> None:
    entry = rig["reg"].get("new")
    cfg = load_agent_config(None, env={}, site="plant", gateway="gw", outbox={"path": str(tmp_path / "o2.sqlite")},
                            update={"model_dir": str(tmp_path / "md2")})
    bus = MemoryBus()
    agent = Agent(cfg, OnnxModel(tmp_path / "base.onnx"), MemoryLink(bus, "agent"), Outbox(cfg.outbox.path))
    cloud = MemoryLink(bus, "cloud")
    cloud.subscribe(T.model_status)
    for p in encode_install("u1", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["result"], st["reason"]) == ("rejected", "no_key")
    assert not (tmp_path / "md2").exists()
    cloud.publish(T.models, b"\x00junk", qos=1)
    agent.step()
    assert agent.metrics.counters["updates_garbage"] == 1 and _statuses(cloud) == []


def test_incompatible_window_is_rejected(rig: dict[str, Any]) -> None:
    agent, cloud, tmp = rig["agent"], rig["cloud"], rig["tmp"]
    (tmp / "w1024.onnx").write_bytes(tiny_onnx("good", window=1024))
    entry = rig["reg"].get(rig["reg"].add(tmp / "w1024.onnx").name)
    for p in encode_install("u2", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["result"], st["reason"]) == ("rejected", "incompatible") and "1024" in st["detail"]


def test_signature_is_over_the_manifest_not_the_message(key: Ed25519PrivateKey) -> None:
    data = b"abc"
    m = _manifest(data, key)
    doc = json.loads(encode_install("u", m, sign(m, key), data)[0])
    doc["manifest"]["classes"] = ["normal", "OR007"]  # a relabelled model must not verify
    up = Assembler(1000).feed(json.dumps(doc).encode())
    assert isinstance(up, Update)
    assert _reason(lambda: verify(up.data, up.manifest, up.signature, key.public_key())) == "bad_signature"
    assert base64.b64decode(doc["data"]) == data


def test_probation_rolls_back_a_model_that_turns_slow(rig: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    agent, cloud, entry = rig["agent"], rig["cloud"], rig["reg"].get("new")
    _frames(cloud, agent, 4, 0.0)
    for p in encode_install("u1", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    assert [s["result"] for s in _statuses(cloud)] == ["installed"]
    fast = agent.model.predict

    def slow(x: np.ndarray) -> np.ndarray:  # 30 ms per batch: far beyond 3x the ~0.1 ms of the old model
        time.sleep(0.03)
        return fast(x)

    monkeypatch.setattr(agent.model, "predict", slow)
    _frames(cloud, agent, 3, 0.0, start=4)  # >= 2 batches: probation (2 batches) ends and judges latency
    (st,) = _statuses(cloud)
    assert (st["result"], st["reason"]) == ("rolled_back", "probation_failed") and "latency" in st["detail"]
    assert agent.model.meta.classes == ("normal", "IR007", "OR007")


def test_shadow_run_refuses_a_slow_model(rig: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    agent, cloud, entry = rig["agent"], rig["cloud"], rig["reg"].get("new")
    _frames(cloud, agent, 4, 0.0)
    real = OnnxModel.predict

    def predict(self: OnnxModel, x: np.ndarray) -> np.ndarray:
        if self.sha256 == entry.manifest.sha256:
            time.sleep(0.03)
        return real(self, x)

    monkeypatch.setattr(OnnxModel, "predict", predict)
    for p in encode_install("u1", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["result"], st["reason"]) == ("rejected", "shadow_failed") and "running model" in st["detail"]
    assert agent.model_info["sha256"] != entry.manifest.sha256


def test_an_unwritable_model_dir_rejects_the_update_and_keeps_the_old_model(rig: dict[str, Any]) -> None:
    agent, cloud, entry = rig["agent"], rig["cloud"], rig["reg"].get("new")
    (rig["tmp"] / "md").write_text("a file where the directory should be")
    old_sha = agent.model_info["sha256"]
    for p in encode_install("u1", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    (st,) = _statuses(cloud)
    assert (st["result"], st["reason"]) == ("rejected", "store_failed")
    assert agent.model_info["sha256"] == old_sha


def test_a_verdict_reached_while_the_link_is_down_arrives_after_it_comes_back(rig: dict[str, Any]) -> None:
    """Verdicts go through the outbox like alerts: one reached during an outage is not lost."""
    from edgevib.edge.source import Message

    agent, cloud, entry = rig["agent"], rig["cloud"], rig["reg"].get("new")
    for p in encode_install("u9", entry.manifest, entry.signature, entry.data()):
        cloud.publish(T.models, p, qos=1)
    agent.step()
    assert [s["result"] for s in _statuses(cloud)] == ["installed"]
    agent.link.connected = False  # the broker is away (a message that was already in the inbox follows)
    agent.link.inbox.put(Message(T.models, encode_rollback("rb9", "operator"), 0.0))
    agent.step()
    assert _statuses(cloud) == [] and len(agent.outbox) == 1  # the verdict waits in the outbox
    agent.link.reconnect()
    agent.step()
    assert [(s["update_id"], s["result"]) for s in _statuses(cloud)] == [("rb9", "rolled_back")]
    agent.step()  # its PUBACK settles the row
    assert len(agent.outbox) == 0 and agent.metrics.counters["model_status_acked"] == 2
    assert agent.metrics.counters.get("alerts_sent", 0) == 0  # verdicts are not counted as alerts
