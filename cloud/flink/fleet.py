"""Fleet state in plain Python: liveness, model inventory and incidents per key.

Kept free of pyflink so it can be unit-tested; :mod:`edgevib.cloud.flink.job` wraps it in a
keyed process function whose state is a JSON string per key (gateway or asset).

Outputs are ``(kind, key, row)`` store records (see :data:`edgevib.cloud.store.KIND_TABLE`).
Every event id is deterministic, so a replay after a restart upserts the same rows.

>>> f = FleetLogic(offline_after_ms=3000, incident_k=2, incident_window_ms=10_000, resolve_ms=5000)
>>> st, out = f.on_bucket(None, "a1", {"asset": "a1", "site": "p", "window_end": 1000, "n": 1})
>>> st, out = f.on_bucket(st, "a1", {"asset": "a1", "site": "p", "window_end": 2000, "n": 1})
>>> [(k, r["status"]) for k, _, r in out if k == "incident"]
[('incident', 'open')]
>>> st, out = f.on_resolve_timer(st, "a1", 7000)
>>> [r["type"] for k, _, r in out if k == "fleet_event"]
['incident_resolved']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Record = tuple[str, str, dict[str, Any]]
State = dict[str, Any]


def _event(type_: str, id_: str, ts_ms: int, *, site: str | None = None, gateway: str | None = None,
           asset: str | None = None, **body: Any) -> Record:
    row = {"id": id_, "type": type_, "site": site, "gateway": gateway, "asset": asset, "ts_ms": ts_ms,
           "body": json.dumps({"type": type_, "id": id_, "site": site, "gateway": gateway, "asset": asset,
                               "ts_ms": ts_ms, **body}, sort_keys=True)}
    return ("fleet_event", id_, row)


@dataclass(frozen=True)
class FleetLogic:
    offline_after_ms: int
    incident_k: int
    incident_window_ms: int
    resolve_ms: int
    retrain_min_windows: int = 20
    # Alert ids remembered per model so a re-label does not count its windows twice.
    label_memory: int = 10_000

    # -- gateways ------------------------------------------------------------------------------
    def on_heartbeat(self, st: State | None, key: str, hb: dict[str, Any], now_ms: int) -> tuple[State, list[Record]]:
        """A heartbeat: the gateway is online (event if it was not), inventory updated."""
        st = dict(st or {})
        out: list[Record] = []
        site, gw = hb["site"], hb["gateway"]
        if st.get("status") != "online":
            out.append(_event("online", f"{key}:online:{hb['ev_ms']}", int(hb["ev_ms"]), site=site, gateway=gw,
                              previous=st.get("status") or "unknown"))
        old_sha = st.get("model_sha256")
        if old_sha is not None and hb.get("model_sha256") is not None and old_sha != hb.get("model_sha256"):
            out.append(_event("model_changed", f"{key}:model:{hb['model_sha256']}:{hb['ev_ms']}", int(hb["ev_ms"]),
                              site=site, gateway=gw, old_sha256=old_sha, model_name=hb.get("model_name"),
                              model_version=hb.get("model_version"), model_sha256=hb.get("model_sha256")))
        st.update({k: hb.get(k) for k in ("site", "gateway", "model_name", "model_version", "model_sha256",
                                          "agent_version", "uptime_s", "outbox_pending", "drops_total")})
        # max: a replayed (older) heartbeat must not move the last sighting back.
        st.update(status="online", last_seen_ms=max(now_ms, int(st.get("last_seen_ms") or 0)),
                  last_hb_ms=max(int(hb["ev_ms"]), int(st.get("last_hb_ms") or 0)))
        out.append(("gateway", key, self._gateway_row(st)))
        return st, out

    def on_status(self, st: State | None, key: str, msg: dict[str, Any]) -> tuple[State, list[Record]]:
        """A birth/last-will message: ``offline`` (last will) takes the gateway offline at once."""
        st = dict(st or {})
        st.setdefault("site", msg["site"])
        st.setdefault("gateway", msg["gateway"])
        st["reported_status"] = msg["status"]
        out: list[Record] = []
        if msg["status"] == "offline" and st.get("status") == "online":
            st["status"] = "offline"
            out.append(_event("offline", f"{key}:offline:{st.get('last_hb_ms')}", int(msg["ev_ms"]),
                              site=msg["site"], gateway=msg["gateway"], reason="last_will",
                              last_heartbeat_ms=st.get("last_hb_ms")))
        out.append(("gateway", key, self._gateway_row(st)))
        return st, out

    def liveness_clock(self, now_ms: int, frontier_ms: int) -> int:
        """The time silence is judged at: how far the job has heard, not the wall clock.

        ``frontier_ms`` is the newest bridge receipt time (``recv_ms``) of any heartbeat this
        operator has processed. A gateway is silent when the job has processed heartbeats
        received ``offline_after_ms`` after its last one and none of its own. A job that is
        behind its input (start-up backlog, restored from a checkpoint, a bridge's queue
        redelivered, a slow store) has not heard the newer heartbeats yet, so its gateways are
        not reported offline; judging at the wall clock made them flap offline, which slowed
        the job further. When nothing arrives at all (a single gateway, or every bridge quiet),
        the clock follows the wall clock ``offline_after_ms`` behind, so silence is still
        reported, one ``offline_after_ms`` late.

        >>> f = FleetLogic(offline_after_ms=3000, incident_k=2, incident_window_ms=10_000, resolve_ms=5000)
        >>> f.liveness_clock(10_000, 9_500), f.liveness_clock(10_000, 2_000)
        (9500, 7000)
        """
        return max(frontier_ms, now_ms - self.offline_after_ms)

    def on_liveness_check(self, st: State | None, key: str, now_ms: int,
                          frontier_ms: int) -> tuple[State | None, list[Record], int | None]:
        """A liveness timer at wall time ``now_ms``: state, records, and when to look again (or None).

        Judged on :meth:`liveness_clock`; while that clock is short of the gateway's due time
        (the job lags its input), nothing is reported and the check is due again that much later.
        """
        if not st or st.get("status") != "online":
            return st, [], None
        clock = self.liveness_clock(now_ms, frontier_ms)
        due = int(st["last_seen_ms"]) + self.offline_after_ms
        if clock < due:
            return st, [], now_ms + (due - clock)
        st, out = self.on_liveness_timer(st, key, clock)
        return st, out, None

    def on_liveness_timer(self, st: State | None, key: str, now_ms: int) -> tuple[State | None, list[Record]]:
        """Check on the liveness clock (:meth:`liveness_clock`): no heartbeat for ``offline_after_ms`` -> ``offline``."""
        if not st or st.get("status") != "online" or now_ms - int(st.get("last_seen_ms", now_ms)) < self.offline_after_ms:
            return st, []
        st = {**st, "status": "offline"}
        ev = _event("offline", f"{key}:offline:{st.get('last_hb_ms')}", now_ms, site=st.get("site"),
                    gateway=st.get("gateway"), reason="heartbeat_missing", last_heartbeat_ms=st.get("last_hb_ms"),
                    silent_ms=now_ms - int(st["last_seen_ms"]))
        return st, [ev, ("gateway", key, self._gateway_row(st))]

    @staticmethod
    def _gateway_row(st: State) -> dict[str, Any]:
        return {k: st.get(k) for k in ("site", "gateway", "status", "last_seen_ms", "last_hb_ms", "model_name",
                                       "model_version", "model_sha256", "agent_version", "uptime_s",
                                       "outbox_pending", "drops_total", "reported_status")}

    # -- incidents -----------------------------------------------------------------------------
    def on_bucket(self, st: State | None, key: str, b: dict[str, Any]) -> tuple[State, list[Record]]:
        """A per-asset bucket of serious alerts (event time); opens an incident at k in the window."""
        st = dict(st or {})
        end = int(b["window_end"])
        buckets = [x for x in st.get("buckets", []) if x[0] > end - self.incident_window_ms]
        buckets.append([end, int(b["n"])])
        st["buckets"] = buckets
        out: list[Record] = []
        inc = st.get("open")
        if inc is None and sum(n for _, n in buckets) >= self.incident_k:
            inc = {"id": f"{key}@{end}", "asset": key, "site": b["site"], "status": "open",
                   "opened_ms": end, "last_alert_ms": end, "n_alerts": sum(n for _, n in buckets),
                   "resolved_ms": None}
            out.append(_event("incident_opened", f"{inc['id']}:opened", end, site=b["site"], asset=key,
                              incident=inc["id"], n_alerts=inc["n_alerts"]))
        elif inc is not None:
            inc = {**inc, "last_alert_ms": end, "n_alerts": int(inc["n_alerts"]) + int(b["n"])}
        if inc is not None:
            st["open"] = inc
            out.append(("incident", inc["id"], inc))
        return st, out

    def resolve_due_ms(self, st: State | None) -> int | None:
        inc = (st or {}).get("open")
        return None if inc is None else int(inc["last_alert_ms"]) + self.resolve_ms

    def on_resolve_timer(self, st: State | None, key: str, ts_ms: int) -> tuple[State | None, list[Record]]:
        """Event-time check: no serious alert for ``resolve_ms`` -> the incident resolves."""
        due = self.resolve_due_ms(st)
        if st is None or due is None or ts_ms < due:
            return st, []
        inc = {**st["open"], "status": "resolved", "resolved_ms": due}
        st = {**st, "open": None}
        ev = _event("incident_resolved", f"{inc['id']}:resolved", due, site=inc["site"], asset=key,
                    incident=inc["id"], n_alerts=inc["n_alerts"])
        return st, [("incident", inc["id"], inc), ev]


    # -- retrain triggers ----------------------------------------------------------------------
    def on_label(self, st: State | None, key: str, lb: dict[str, Any]) -> tuple[State, list[Record]]:
        """An operator's label (keyed by model): a trigger once ``retrain_min_windows`` new
        labelled windows have arrived since the last trigger.

        The trigger id is the model name and a sequence number kept in state, so a replay
        from a checkpoint emits the same id (the store upserts; the worker runs it once).
        A re-labelled alert changes the class, not the count.
        """
        st = dict(st or {})
        seen: list[str] = list(st.get("seen", []))
        out: list[Record] = []
        if lb["id"] in seen:
            return st, out
        seen.append(lb["id"])
        st["seen"] = seen[-self.label_memory:]
        pending = int(st.get("pending", 0)) + max(0, int(lb.get("n") or 0))
        gateways = sorted({*st.get("gateways", []), f"{lb['site']}/{lb['gateway']}"})
        if pending < self.retrain_min_windows:
            st.update(pending=pending, gateways=gateways)
            return st, out
        seq = int(st.get("seq", 0)) + 1
        model = lb.get("model_name") or ""
        tid = f"retrain:{model or '-'}:{seq}"
        ts = int(lb["ev_ms"])
        detail = json.dumps({"gateways": gateways, "last_alert": lb["id"]}, sort_keys=True)
        out.append(("retrain_trigger", tid, {"id": tid, "reason": "labels", "model_name": model,
                                             "site": lb["site"], "gateway": lb["gateway"],
                                             "n_windows": pending, "ts_ms": ts, "detail": detail}))
        out.append(_event("retrain_triggered", f"{tid}:triggered", ts, site=lb["site"], gateway=lb["gateway"],
                          trigger=tid, reason="labels", model_name=model, n_windows=pending))
        st.update(pending=0, seq=seq, gateways=[])
        return st, out
