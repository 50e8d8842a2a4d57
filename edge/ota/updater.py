"""The agent's side of model updates: verify, shadow-run, swap between batches, probation, rollback.

Everything runs in the agent's one worker thread, so a swap can never split a batch. The
updater knows the agent only through what it is handed: the :class:`ModelSlot` it swaps,
the metrics it counts in, and ``report`` (the agent stores each verdict in its outbox, to
publish at QoS 1 like an alert). Outcomes are ``edgevib.model_status/1`` documents on
``.../model_status``, counted as ``updates_installed|rejected|rolled_back``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from edgevib.edge.config import AgentConfig
from edgevib.edge.errors import EdgeError
from edgevib.edge.model import F32, Model, describe, run_model
from edgevib.edge.ota.slot import ModelSlot
from edgevib.edge.ota.store import ModelStore
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
    from edgevib.edge.metrics import Metrics

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
    """Swaps the model in ``slot``; each verdict's JSON goes to ``report`` (the agent's outbox)."""

    def __init__(self, cfg: AgentConfig, slot: ModelSlot, metrics: Metrics, report: Callable[[bytes], None], *,
                 clock: Callable[[], float] = time.monotonic, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.agent_cfg, self.cfg, self.slot, self.metrics = cfg, cfg.update, slot, metrics
        self.report, self.wall_ns = report, wall_ns
        self.key = load_public_key(self.cfg.public_key) if self.cfg.public_key else None
        self.store = ModelStore(self.cfg.model_dir)
        self.assembler = Assembler(self.cfg.max_model_bytes, clock=clock)
        self.ring: deque[F32] = deque(maxlen=self.cfg.shadow_windows)
        self.ring_ctx: deque[FaultHz] = deque(maxlen=self.cfg.shadow_windows)  # each window's fault frequencies
        self.batch_ms: deque[tuple[float, int]] = deque(maxlen=64)  # running model: (ms, windows)
        self.update_id, self.manifest = "", dict(slot.info)
        self._prob_ms: list[tuple[float, int]] = []
        self._baseline = 0.0  # old model's p50 ms per window

    # -- messages ---------------------------------------------------------------------------------
    def on_message(self, payload: bytes) -> None:
        junk = sum(self.assembler.garbage.values())
        got = self.assembler.feed(payload)
        if sum(self.assembler.garbage.values()) > junk:
            self.metrics.inc("updates_garbage")  # malformed or superseded chunks: counted, not raised
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

        try:
            m = verify(up.data, up.manifest, up.signature, self.key, max_bytes=self.cfg.max_model_bytes)
            old = self.slot.current.meta
            if (m.window, m.sample_rate) != (old.window, old.sample_rate):
                raise UpdateError("incompatible", f"model takes {m.window} samples at {m.sample_rate:g} Hz, "
                                  f"this agent windows {old.window} at {old.sample_rate:g} Hz",
                                  "push a model with the running model's window and sample rate")
            try:
                new = OnnxModel(up.data, threads=self.agent_cfg.threads, name=m.name)
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
            self.store.install(up.data, name=m.name, version=m.version, sha256=m.sha256,
                               current=self._slot(self.slot.current))
        except (EdgeError, OSError) as exc:  # e.g. a full disk: keep running the old model
            return self._status(up.update_id, up.manifest, "rejected", "store_failed", str(exc)[:300])
        self._baseline = self._per_window(self.batch_ms) or shadow["old_ms_per_window"]
        self.update_id, self.manifest = up.update_id, m.to_dict()
        self._swap(new, probation=self.cfg.probation_batches)  # the running model becomes the slot's previous
        self._prob_ms = []
        self._status(up.update_id, self.manifest, "installed", "ok", "shadow-run passed", shadow=shadow,
                     probation_batches=self.slot.probation)

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
        old = self.slot.current
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

    def _swap(self, new: Model, *, probation: int = 0, keep_previous: bool = True) -> None:
        self.slot.swap(new, probation=probation, keep_previous=keep_previous)  # the slot's listeners follow
        self.batch_ms.clear()  # the running model's latency: the new one starts afresh

    # -- batches (called by Agent.infer) ----------------------------------------------------------
    def predict(self, x: F32, context: Sequence[FaultHz] | None = None) -> F32:
        """Run the current model; in probation a failure or a slow model rolls back, then the old one runs."""
        slot = self.slot
        t0 = time.perf_counter()
        try:
            probs = run_model(slot.current, x, context)
            if slot.probation and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
                raise EdgeError("edge.ota.updater", "rows do not sum to 1", "end the graph with a softmax")
        except Exception as exc:
            if not slot.probation:
                raise
            problem = exc.problem if isinstance(exc, EdgeError) else repr(exc)
            self.rollback(self.update_id, "probation_failed", f"batch {len(self._prob_ms) + 1}: {problem}"[:300])
            return run_model(slot.current, x, context)
        sample = ((time.perf_counter() - t0) * 1000, len(x))
        self.ring.extend(np.array(r) for r in x[:, 0, :])
        self.ring_ctx.extend(context if context is not None else [fault_frequencies(CWRU_DE_6205, 1797.0)] * len(x))
        self.batch_ms.append(sample)
        if slot.probation:
            self._prob_ms.append(sample)
            slot.probation -= 1
            if not slot.probation and self._end_probation():
                return run_model(slot.current, x, context)  # rolled back: this batch's rows must match the classes now
        return probs

    def _end_probation(self) -> bool:
        """Judge the probation's latency; True if it rolled back."""
        new = self._per_window(self._prob_ms, least=1)
        batch = float(np.median([ms for ms, _ in self._prob_ms])) if self._prob_ms else 0.0
        if self._baseline and new > self.cfg.max_latency_factor * self._baseline and batch > LATENCY_FLOOR_MS:
            return self.rollback(self.update_id, "probation_failed", f"latency {new:.3f} ms/window > "
                                 f"{self.cfg.max_latency_factor:g} x {self._baseline:.3f}")
        log.info("model %s passed probation (%d batches)", self.slot.info["version"], len(self._prob_ms))
        return False

    def rollback(self, update_id: str, reason: str, detail: str) -> bool:
        """Go back to the previous model (memory, else the store's previous slot); report either way."""
        from edgevib.edge.runtime import OnnxModel

        prev, bad = self.slot.previous, dict(self.slot.info)
        slot = self.store.previous()
        if prev is None and slot:
            try:
                prev = OnnxModel(slot["path"], threads=self.agent_cfg.threads, name=slot["name"])
                prev.version = slot["version"]
            except EdgeError as exc:
                log.warning("previous model %s does not load: %s", slot["path"], exc)
        if prev is None:
            self.slot.probation = 0  # one verdict, not one per failing batch
            self._status(update_id, bad, "rejected", "no_previous", f"cannot roll back ({detail})")
            return False
        self._swap(prev, keep_previous=False)  # probation over, nothing older in memory
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
        cfg = self.agent_cfg
        doc = make_status(site=cfg.site, gateway=cfg.gateway, update_id=update_id, result=result, reason=reason,
                          manifest=manifest if isinstance(manifest, Mapping) else None, t_ns=self.wall_ns(),
                          detail=detail, **numbers)
        self.metrics.inc(f"updates_{result}")
        (log.info if result == "installed" else log.warning)("model update %s %s: %s (%s)", update_id, result,
                                                             reason, detail)
        # through the outbox, like an alert: a verdict reached while the link is down still arrives
        self.report(json.dumps(doc, default=float).encode())
