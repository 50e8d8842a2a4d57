"""Staged model rollouts over MQTT: canaries first, then the rest; halt and roll back on any failure.

:func:`push` sends a registry version to ``(site, gateway)`` targets on their ``models``
topic and waits for each gateway's ``model_status`` (no fixed sleeps: it returns as soon
as every verdict is in). A canary that answers ``rejected`` or ``rolled_back``, or not at
all within ``timeout_s``, halts the rollout; canaries that did install get a ``rollback``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgevib.edge.mqtt import MqttLink
from edgevib.models.registry import Registry

from edgevib import protocol as proto
from edgevib.errors import ConfigError, RetryableError
from edgevib.protocol.updates import STATUS_SCHEMA, encode_install, encode_rollback, new_update_id

log = logging.getLogger(__name__)
Target = tuple[str, str]


@dataclass
class RolloutResult:
    """``status``: ``done`` (all installed), ``halted`` (a canary failed), ``failed`` (a later one failed)."""

    id: str
    name: str
    version: str
    sha256: str
    status: str
    canaries: list[str]
    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)  # "site/gw" -> result, reason, stage
    started_ms: int = 0
    finished_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "version": self.version, "sha256": self.sha256,
                "status": self.status, "canaries": self.canaries, "gateways": self.gateways,
                "started_ms": self.started_ms, "finished_ms": self.finished_ms}


def _key(t: Target) -> str:
    return f"{t[0]}/{t[1]}"


class _Wire:
    """One MQTT connection subscribed to the targets' ``model_status``."""

    def __init__(self, broker_url: str, targets: Sequence[Target], connect_timeout: float = 10.0) -> None:
        self.link = MqttLink(broker_url, f"edgevib-rollout-{uuid.uuid4().hex[:8]}", connect=False)
        for site, gw in targets:
            self.link.subscribe(proto.Topics(site, gw).model_status)
        self.link.start()
        if not self.link.wait_connected(connect_timeout):
            self.link.close()
            raise RetryableError("cloud.rollout", f"broker {broker_url} not reachable in {connect_timeout:g} s",
                                 "start the broker or fix --broker")
        self.statuses: list[dict[str, Any]] = []

    def send(self, t: Target, payloads: Iterable[bytes]) -> None:
        topic = proto.Topics(*t).models
        for p in payloads:
            if self.link.publish(topic, p, qos=1) is None:
                raise RetryableError("cloud.rollout", f"publish to {topic} refused (offline or queue full)", "retry")

    def _next(self, timeout: float) -> dict[str, Any] | None:
        """The next model_status document (kept in ``statuses``), or None."""
        msg = self.link.poll(timeout)
        if msg is None:
            return None
        try:
            doc = json.loads(msg.payload)
            if not isinstance(doc, dict) or doc.get("schema") != STATUS_SCHEMA:
                return None
            doc["_key"] = f"{doc['site']}/{doc['gateway']}"
        except (ValueError, KeyError, TypeError):
            log.warning("rollout: unreadable model_status on %s", msg.topic)
            return None
        self.statuses.append(doc)
        return doc

    def wait(self, want: dict[str, str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """``{"site/gw": update_id}`` -> the first status of each with that update id (missing on timeout)."""
        got: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + timeout_s
        while len(got) < len(want) and (left := end - time.monotonic()) > 0:
            d = self._next(min(left, 0.5))
            if d is not None and want.get(d["_key"]) == d.get("update_id") and d["_key"] not in got:
                got[d["_key"]] = d
        return got

    def rolled_back(self, keys: Iterable[str], update_id: str, seconds: float) -> dict[str, dict[str, Any]]:
        """Listen ``seconds`` for probation rollbacks of ``update_id`` by ``keys`` (the canary soak)."""
        want, end = set(keys), time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._next(min(left, 0.5))
        return {d["_key"]: d for d in self.statuses if d["_key"] in want and d.get("update_id") == update_id
                and d.get("result") == "rolled_back"}

    def close(self) -> None:
        self.link.close()


def _record(store: Any, res: RolloutResult, statuses: list[dict[str, Any]], canary_pct: float) -> None:
    if store is None:
        return
    store.apply("rollout", {"id": res.id, "name": res.name, "version": res.version, "sha256": res.sha256,
                            "target": ",".join(res.gateways), "canary_pct": canary_pct, "status": res.status,
                            "started_ms": res.started_ms, "finished_ms": res.finished_ms,
                            "detail": json.dumps(res.gateways, sort_keys=True)})
    for d in statuses:
        store.apply("model_status", {"site": d["site"], "gateway": d["gateway"], "ts_ms": int(d["t_ns"]) // 1_000_000,
                                     "name": d.get("name"), "version": d.get("version"), "sha256": d.get("sha256"),
                                     "result": d.get("result"), "reason": d.get("reason")})


def _stage(wire: _Wire, targets: Sequence[Target], msgs: Callable[[Target], list[bytes]], update_id: str,
           timeout_s: float, stage: str, res: RolloutResult) -> list[Target]:
    """Send to ``targets``, wait for their verdicts; return those that installed."""
    for t in targets:
        wire.send(t, msgs(t))
    got = wire.wait({_key(t): update_id for t in targets}, timeout_s)
    ok: list[Target] = []
    for t in targets:
        d = got.get(_key(t))
        res.gateways[_key(t)] = {"stage": stage, "result": d["result"] if d else "timeout",
                                 "reason": d.get("reason") if d else f"no model_status in {timeout_s:g} s",
                                 "detail": d.get("detail") if d else None}
        if d and d["result"] == "installed":
            ok.append(t)
    return ok


def push(registry: Registry, name: str, version: str | None, targets: Sequence[Target], *, broker_url: str,
         canary_pct: float = 0.0, timeout_s: float = 60.0, store: Any = None,
         canary_soak_s: float = 0.0) -> RolloutResult:
    """Roll ``name`` (``version``, or the newest) out to ``targets``; canaries (``canary_pct`` % of them,
    at least one when > 0) first. See the module docstring for when it halts. ``canary_soak_s``: after
    the canaries installed, keep listening that long; a probation rollback by one of them halts too."""
    if not targets:
        raise ConfigError("cloud.rollout", "no targets", "give --to SITE/GATEWAY or --to fleet with gateways known")
    if not 0.0 <= canary_pct <= 100.0:
        raise ConfigError("cloud.rollout", f"canary_pct={canary_pct}", "use 0..100 (percent of the targets)")
    entry = registry.get(name, version)
    m, data = entry.manifest, entry.data()
    n_canary = min(len(targets), math.ceil(len(targets) * canary_pct / 100)) if canary_pct > 0 else 0
    canaries, rest = list(targets[:n_canary]), list(targets[n_canary:])
    update_id = new_update_id(m)
    msgs = encode_install(update_id, m, entry.signature, data)
    res = RolloutResult(update_id, m.name, m.version, m.sha256, "done", [_key(t) for t in canaries],
                        started_ms=int(time.time() * 1000))
    wire = _Wire(broker_url, targets)
    try:
        if canaries:
            ok = _stage(wire, canaries, lambda _t: msgs, update_id, timeout_s, "canary", res)
            if len(ok) == len(canaries) and canary_soak_s > 0:
                for k, d in wire.rolled_back(res.canaries, update_id, canary_soak_s).items():
                    res.gateways[k].update(result="rolled_back", reason=d.get("reason"), detail=d.get("detail"))
                    ok = [t for t in ok if _key(t) != k]
            if len(ok) < len(canaries):
                res.status = "halted"
                for t in rest:
                    res.gateways[_key(t)] = {"stage": "rest", "result": "not_sent", "reason": "canary failed",
                                             "detail": None}
                if ok:  # undo the canaries that took it
                    scratch = RolloutResult(res.id, m.name, m.version, m.sha256, "", [])
                    _stage(wire, ok, lambda _t: [encode_rollback(f"{update_id}-rb", "canary failed")],
                           f"{update_id}-rb", timeout_s, "canary", scratch)
                    for t in ok:
                        res.gateways[_key(t)]["rollback"] = scratch.gateways[_key(t)]["result"]
                log.warning("rollout %s halted at the canaries (%d of %d installed)", update_id, len(ok), len(canaries))
        if res.status == "done" and rest:
            ok = _stage(wire, rest, lambda _t: msgs, update_id, timeout_s, "rest" if canaries else "all", res)
            if len(ok) < len(rest):
                res.status = "failed"
    finally:
        res.finished_ms = int(time.time() * 1000)
        wire.close()
        _record(store, res, wire.statuses, canary_pct)
    log.info("rollout %s of %s v%s: %s", update_id, m.name, m.version, res.status)
    return res


def rollback(targets: Sequence[Target], *, broker_url: str, timeout_s: float = 60.0, store: Any = None,
             reason: str = "requested") -> RolloutResult:
    """Tell each target to go back to its previous model; ``done`` when all confirm ``rolled_back``."""
    if not targets:
        raise ConfigError("cloud.rollout", "no targets", "give --to SITE/GATEWAY or --to fleet")
    rid = f"rollback-{uuid.uuid4().hex[:8]}"
    res = RolloutResult(rid, "", "", "", "done", [], started_ms=int(time.time() * 1000))
    wire = _Wire(broker_url, targets)
    try:
        _stage(wire, targets, lambda _t: [encode_rollback(rid, reason)], rid, timeout_s, "rollback", res)
        if any(g["result"] != "rolled_back" for g in res.gateways.values()):
            res.status = "failed"
    finally:
        res.finished_ms = int(time.time() * 1000)
        wire.close()
        _record(store, res, wire.statuses, 0.0)
    return res
