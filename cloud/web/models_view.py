"""The models page: registry versions with their metrics, rollouts, and push/rollback jobs.

Pushes and rollbacks call :mod:`edgevib.cloud.rollout` (staged, signed model updates) in a
background thread each, so a request returns at once; the page polls :meth:`ModelsView.overview`.
Without a registry directory the page still lists the store's rollouts and verdicts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edgevib.cloud import rollout
from edgevib.cloud.errors import CloudError
from edgevib.cloud.store import Store, _col_names
from edgevib.models.registry import Registry, RegistryConfig, check_name

log = logging.getLogger(__name__)


def _rows(store: Store, table: str, order: str, limit: int = 50) -> list[dict[str, Any]]:
    names = _col_names(table)
    return [dict(zip(names, r, strict=True)) for r in
            store.query(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order} DESC LIMIT {int(limit)}")]


class ModelsView:
    """Reads the registry and the store; runs one rollout job at a time in a thread."""

    def __init__(self, store_url: str, broker_url: str | None, registry_dir: Path | None = None) -> None:
        self.store_url, self.broker_url, self.registry_dir = store_url, broker_url, registry_dir
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def registry(self) -> Registry:
        """The signed registry at ``registry_dir`` (default ``model-registry``, as ``edgevib models``)."""
        return Registry(self.registry_dir if self.registry_dir is not None else RegistryConfig().root)

    def versions(self) -> tuple[list[dict[str, Any]] | None, str]:
        reg = self.registry()
        if not reg.root.is_dir():
            return None, f"no model registry at {reg.root} (edgevib models add, or --registry DIR)"
        try:
            entries = reg.list()
        except Exception as exc:  # noqa: BLE001 - the page shows why, the rest still works
            return None, f"registry {reg.root} unreadable: {exc}"
        return [{"name": e.manifest.name, "version": e.manifest.version, "sha256": e.manifest.sha256,
                 "created_ms": e.manifest.created_ms, "size": e.manifest.size,
                 "metrics": dict(e.manifest.metrics)} for e in reversed(entries)], f"registry {reg.root}"

    def overview(self, store: Store) -> dict[str, Any]:
        versions, note = self.versions()
        rollouts = _rows(store, "rollouts", "started_ms")
        status = _rows(store, "model_status", "ts_ms")
        # Retrain triggers with the worker's run (gate decision and numbers), newest first.
        runs = {r["trigger_id"]: r for r in _rows(store, "retrain_runs", "started_ms")}
        retrains = [{**t, "run": runs.get(t["id"])} for t in _rows(store, "retrain_triggers", "ts_ms")]
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: -j["started_ms"])
        return {"registry": versions, "registry_note": note, "rollouts": rollouts, "model_status": status,
                "retrains": retrains,
                "jobs": jobs, "can_push": self.broker_url is not None and versions is not None}

    def _start(self, kind: str, detail: dict[str, Any], work: Any) -> dict[str, Any]:
        if self.broker_url is None:
            raise CloudError("cloud.dashboard", f"{kind} without a broker", "start the dashboard with --broker URL")
        with self._lock:
            if any(j["status"] == "running" for j in self.jobs.values()):
                raise CloudError("cloud.dashboard", f"{kind} while another rollout runs", "wait for it to finish")
            job = {"id": uuid.uuid4().hex[:12], "kind": kind, **detail, "status": "running",
                   "started_ms": int(time.time() * 1000), "finished_ms": None, "result": None, "error": None}
            self.jobs[job["id"]] = job

        def run() -> None:
            store = Store(self.store_url)
            try:
                res = work(store)
                upd = {"status": "done", "result": res if isinstance(res, (dict, list, str, int, float)) else str(res)}
            except Exception as exc:  # noqa: BLE001 - reported on the page
                log.warning("dashboard %s failed: %s", kind, exc)
                upd = {"status": "failed", "error": str(exc)}
            finally:
                store.close()
            with self._lock:
                job.update(upd, finished_ms=int(time.time() * 1000))

        threading.Thread(target=run, name=f"dashboard-{kind}", daemon=True).start()
        return dict(job)

    def start_push(self, name: str, version: str, targets: list[str], canary_pct: float) -> dict[str, Any]:
        if not 0.0 <= canary_pct <= 100.0:
            raise CloudError("cloud.dashboard", f"canary_pct={canary_pct}", "use 0..100")
        tg = parse_targets(targets)
        reg = self.registry()
        reg.get(check_name(name, "name"), check_name(version, "version"))  # unknown version: refused now, not later
        broker = self.broker_url or ""
        return self._start("push", {"name": name, "version": version, "targets": targets, "canary_pct": canary_pct},
                           lambda store: rollout.push(reg, name, version, tg, broker_url=broker,
                                                      canary_pct=canary_pct, store=store).to_dict())

    def start_rollback(self, targets: list[str]) -> dict[str, Any]:
        tg = parse_targets(targets)
        broker = self.broker_url or ""
        return self._start("rollback", {"targets": targets},
                           lambda store: rollout.rollback(tg, broker_url=broker, store=store).to_dict())


def parse_targets(targets: list[str]) -> list[tuple[str, str]]:
    """``["site/gateway", ...]`` -> ``[(site, gateway), ...]``."""
    out = []
    for t in targets:
        site, _, gw = t.strip().partition("/")
        if not site or not gw or "/" in gw:
            raise CloudError("cloud.dashboard", f"target {t!r}", "use site/gateway, comma-separated")
        out.append((site, gw))
    if not out:
        raise CloudError("cloud.dashboard", "no targets", "give at least one site/gateway")
    return out
