"""The agent's side of model updates: verify, shadow-run, swap between batches, probation, rollback.

Everything runs in the agent's one worker thread, so a swap can never split a batch.
Outcomes go out as ``edgevib.model_status/1`` on ``.../model_status`` (QoS 1) and are
counted as ``updates_installed|rejected|rolled_back``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from edgevib.edge.alerting import Alerter
from edgevib.edge.config import AgentConfig
from edgevib.edge.errors import EdgeError
from edgevib.edge.model import F32, Model, describe, run_model
from edgevib.edge.modelstore import ModelStore
from edgevib.models.bearing import CWRU_DE_6205
from edgevib.models.orders import FaultHz, fault_frequencies

from edgevib.protocol.updates import (
    Assembler,
    Rejected,
    Rollback,
    Update,
    UpdateError,
    load_public_key,
    make_status,
    verify,
)

if TYPE_CHECKING:
    from edgevib.edge.agent import Agent

log = logging.getLogger(__name__)
LATENCY_FLOOR_MS = 2.0  # a batch faster than this is never "too slow", whatever the ratio (timer jitter)
SHADOW_RUNS = 3  # timed shadow runs per model; the fastest of each counts


def load_active(cfg: AgentConfig) -> Model | None:
    """The model ``model_dir/current.json`` names, if any and intact (a pushed model survives restarts)."""
    from edgevib.edge.runtime import OnnxModel

    slot = ModelStore(cfg.update.model_dir).active()
    if not slot:
        return None
    try:
        m = OnnxModel(slot["path"], threads=cfg.threads, name=slot["name"])
    except EdgeError as exc:
        log.warning("active model in %s does not load (%s); using the configured one", cfg.update.model_dir, exc)
        return None
    if m.sha256 != slot["sha256"]:
        log.warning("active model %s changed on disk (sha256 %s); using the configured one", slot["path"], m.sha256[:12])
        return None
    m.version = slot["version"]
    return m


class Updater:
    """Owned by an :class:`Agent`; it swaps ``agent.model`` and reports on ``topics.model_status``."""

    def __init__(self, agent: Agent) -> None:
        self.agent, self.cfg = agent, agent.cfg.update
        self.key = load_public_key(self.cfg.public_key) if self.cfg.public_key else None
        self.store = ModelStore(self.cfg.model_dir)
        self.assembler = Assembler(self.cfg.max_model_bytes, clock=agent.clock)
        self.ring: deque[F32] = deque(maxlen=self.cfg.shadow_windows)
        self.ring_ctx: deque[FaultHz] = deque(maxlen=self.cfg.shadow_windows)  # each window's fault frequencies
        self.batch_ms: deque[tuple[float, int]] = deque(maxlen=64)  # running model: (ms, windows)
        self.previous: Model | None = None
        self.update_id, self.manifest = "", dict(describe(agent.model))
        self.probation = 0
        self._prob_ms: list[tuple[float, int]] = []
        self._baseline = 0.0  # old model's p50 ms per window

    # -- messages ---------------------------------------------------------------------------------
    def on_message(self, payload: bytes) -> None:
        junk = sum(self.assembler.garbage.values())
        got = self.assembler.feed(payload)
        if sum(self.assembler.garbage.values()) > junk:
            self.agent.metrics.inc("updates_garbage")  # malformed or superseded chunks: counted, not raised
        if isinstance(got, Update):
            try:
                self._install(got)
            except Exception as exc:  # a bug here must cost the update, not the agent
                log.exception("model update %s failed", got.update_id)
                self._status(got.update_id, got.manifest, "rejected", "internal_error", repr(exc)[:300])
        elif isinstance(got, Rollback):
            self.rollback(got.update_id, "requested", got.reason)
        elif isinstance(got, Rejected):
            self._status(got.update_id, got.manifest, "rejected", got.reason, got.detail)
        else:
            self.tick()

    def tick(self) -> None:
        if (r := self.assembler.expire()) is not None:
            self._status(r.update_id, r.manifest, "rejected", r.reason, r.detail)

    def _install(self, up: Update) -> None:
        from edgevib.edge.runtime import OnnxModel

        a = self.agent
        try:
            m = verify(up.data, up.manifest, up.signature, self.key, max_bytes=self.cfg.max_model_bytes)
            old = a.model.meta
            if (m.window, m.sample_rate) != (old.window, old.sample_rate):
                raise UpdateError("incompatible", f"model takes {m.window} samples at {m.sample_rate:g} Hz, "
                                  f"this agent windows {old.window} at {old.sample_rate:g} Hz",
                                  "push a model with the running model's window and sample rate")
            try:
                new = OnnxModel(up.data, threads=a.cfg.threads, name=m.name)
            except EdgeError as exc:
                raise UpdateError("load_failed", exc.problem, exc.fix) from exc
            if (new.meta.window, new.meta.sample_rate, new.meta.classes) != (m.window, m.sample_rate, m.classes):
                raise UpdateError("incompatible", "the ONNX metadata differs from the signed manifest",
                                  "re-add the model with `edgevib models add`")
            new.version = m.version
            shadow = self._shadow(new)
        except UpdateError as exc:
            return self._status(up.update_id, up.manifest, "rejected", exc.reason, exc.problem)
        try:
            self.store.install(up.data, name=m.name, version=m.version, sha256=m.sha256, current=self._slot(a.model))
        except (EdgeError, OSError) as exc:  # e.g. a full disk: keep running the old model
            return self._status(up.update_id, up.manifest, "rejected", "store_failed", str(exc)[:300])
        self._baseline = self._per_window(self.batch_ms) or shadow["old_ms_per_window"]
        self.previous, self.update_id, self.manifest = a.model, up.update_id, m.to_dict()
        self._swap(new)
        self.probation, self._prob_ms = self.cfg.probation_batches, []
        self._status(up.update_id, self.manifest, "installed", "ok", "shadow-run passed", shadow=shadow,
                     probation_batches=self.probation)

    @staticmethod
    def _slot(model: Model) -> dict[str, Any] | None:
        path = getattr(model, "path", None)
        return {**describe(model), "path": str(path.resolve())} if path else None

    @staticmethod
    def _per_window(samples: Any, least: int = 5) -> float:
        """Median ms per window of ``(ms, windows)`` batch samples; 0 when fewer than ``least``."""
        return float(np.median([ms / n for ms, n in samples])) if len(samples) >= max(1, least) else 0.0

    def _shadow(self, new: Model) -> dict[str, Any]:
        """Run ``new`` next to the running model on recent windows; raise ``shadow_failed`` if it misbehaves."""
        old = self.agent.model
        real = len(self.ring)
        xs = (np.stack(self.ring) if real else
              np.random.default_rng(0).normal(0, 0.1, (8, old.meta.window)).astype(np.float32))[:, None, :]
        ctx = list(self.ring_ctx) if real else [fault_frequencies(CWRU_DE_6205, 1797.0)] * len(xs)
        old_s: list[float] = []
        new_s: list[float] = []
        try:
            p_new = run_model(new, xs, ctx)  # checked below; also the warm-up (a session's first run allocates)
            # Best of a few interleaved runs: one run of a millisecond-scale model on a busy
            # gateway measures the scheduler as much as the model (seen: 2.1 vs 0.3 ms, same graph).
            for _ in range(SHADOW_RUNS):
                t0 = time.perf_counter()
                p_old = run_model(old, xs, ctx)
                t1 = time.perf_counter()
                run_model(new, xs, ctx)
                old_s.append(t1 - t0)
                new_s.append(time.perf_counter() - t1)
        except EdgeError as exc:
            raise UpdateError("shadow_failed", f"shadow-run on {len(xs)} windows: {exc.problem}", exc.fix) from exc
        old_ms, new_ms = min(old_s) * 1000, min(new_s) * 1000
        sums = p_new.sum(axis=1)
        if np.any(p_new < -1e-4) or not np.allclose(sums, 1.0, atol=1e-3):
            raise UpdateError("shadow_failed", f"rows are not probabilities (sums {sums.min():.3f}..{sums.max():.3f})",
                              "end the graph with a softmax")
        if new_ms > self.cfg.max_latency_factor * old_ms and new_ms > LATENCY_FLOOR_MS:
            raise UpdateError("shadow_failed", f"{new_ms:.1f} ms vs {old_ms:.1f} ms for the running model on "
                              f"{len(xs)} windows", "push a faster model or raise update.max_latency_factor")
        same = new.meta.classes == old.meta.classes
        agree = float(np.mean(p_new.argmax(1) == p_old.argmax(1))) if same else None
        return {"windows": len(xs), "real_windows": real, "old_ms": round(old_ms, 3), "new_ms": round(new_ms, 3),
                "old_ms_per_window": round(old_ms / len(xs), 4), "agree": agree}

    def _swap(self, new: Model) -> None:
        a, old = self.agent, self.agent.model
        a.model, a.model_info = new, describe(new)
        gone = set(old.meta.classes) - set(new.meta.classes)
        for s in a.sensors.values():  # an alert (or vote history) of a class the new model lacks is stale
            if gone and (s.alerter.active is None or s.alerter.active in gone):
                s.alerter = Alerter(s.alerter.policy, s.alerter.clock)
        self.batch_ms.clear()
        log.info("model swapped: %s v%s -> %s v%s", old.name, old.version, new.name, new.version)

    # -- batches (called by Agent.infer) ----------------------------------------------------------
    def predict(self, x: F32, context: Sequence[FaultHz] | None = None) -> F32:
        """Run the current model; in probation a failure or a slow model rolls back, then the old one runs."""
        t0 = time.perf_counter()
        try:
            probs = run_model(self.agent.model, x, context)
            if self.probation and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
                raise EdgeError("edge.updater", "rows do not sum to 1", "end the graph with a softmax")
        except Exception as exc:
            if not self.probation:
                raise
            problem = exc.problem if isinstance(exc, EdgeError) else repr(exc)
            self.rollback(self.update_id, "probation_failed", f"batch {len(self._prob_ms) + 1}: {problem}"[:300])
            return run_model(self.agent.model, x, context)
        sample = ((time.perf_counter() - t0) * 1000, len(x))
        self.ring.extend(np.array(r) for r in x[:, 0, :])
        self.ring_ctx.extend(context if context is not None else [fault_frequencies(CWRU_DE_6205, 1797.0)] * len(x))
        self.batch_ms.append(sample)
        if self.probation:
            self._prob_ms.append(sample)
            self.probation -= 1
            if not self.probation and self._end_probation():
                return run_model(self.agent.model, x, context)  # rolled back: this batch's rows must match the classes now
        return probs

    def _end_probation(self) -> bool:
        """Judge the probation's latency; True if it rolled back."""
        new = self._per_window(self._prob_ms, least=1)
        batch = float(np.median([ms for ms, _ in self._prob_ms])) if self._prob_ms else 0.0
        if self._baseline and new > self.cfg.max_latency_factor * self._baseline and batch > LATENCY_FLOOR_MS:
            return self.rollback(self.update_id, "probation_failed", f"latency {new:.3f} ms/window > "
                                 f"{self.cfg.max_latency_factor:g} x {self._baseline:.3f}")
        log.info("model %s passed probation (%d batches)", self.agent.model_info["version"], len(self._prob_ms))
        return False

    def rollback(self, update_id: str, reason: str, detail: str) -> bool:
        """Go back to the previous model (memory, else the store's previous slot); report either way."""
        from edgevib.edge.runtime import OnnxModel

        prev, bad = self.previous, dict(describe(self.agent.model))
        slot = self.store.previous()
        if prev is None and slot:
            try:
                prev = OnnxModel(slot["path"], threads=self.agent.cfg.threads, name=slot["name"])
                prev.version = slot["version"]
            except EdgeError as exc:
                log.warning("previous model %s does not load: %s", slot["path"], exc)
        if prev is None:
            self.probation = 0  # one verdict, not one per failing batch
            self._status(update_id, bad, "rejected", "no_previous", f"cannot roll back ({detail})")
            return False
        self._swap(prev)
        self.previous, self.probation = None, 0
        try:
            if slot:
                self.store.rollback()
            else:  # the previous model was the configured one: the next start must not load the bad one
                self.store.forget()
        except (EdgeError, OSError) as exc:  # the swap in memory stands; a restart may load the bad model
            log.error("model store %s not switched back: %s", self.store.dir, exc)
        self._status(update_id, bad, "rolled_back", reason, detail, active=describe(prev))
        return True

    def _status(self, update_id: str, manifest: Mapping[str, Any] | None, result: str, reason: str,
                detail: str, **numbers: Any) -> None:
        a = self.agent
        doc = make_status(site=a.cfg.site, gateway=a.cfg.gateway, update_id=update_id, result=result, reason=reason,
                          manifest=manifest if isinstance(manifest, Mapping) else None, t_ns=a.wall_ns(),
                          detail=detail, **numbers)
        a.metrics.inc(f"updates_{result}")
        (log.info if result == "installed" else log.warning)("model update %s %s: %s (%s)", update_id, result,
                                                             reason, detail)
        # through the outbox, like an alert: a verdict reached while the link is down still arrives
        a.send_reliably(a.topics.model_status, json.dumps(doc, default=float).encode())
