"""The cloud's bounded store of evidence windows, with provenance, for labelling and retraining.

Each accepted record (:mod:`edgevib.protocol.evidence`) becomes one ``.npy`` file under
``root/<site>/<gateway>/<id>.npy`` (written to a hidden temp file, then renamed) and one
row of the store's ``evidence`` table. Bad input never raises: it is counted in
``rejected[reason]`` and :meth:`EvidenceStore.put` returns None.

Bounds: ``max_per_gateway_per_min`` records per gateway (token bucket), and ``max_bytes``
of window files. To make room, evict the oldest unlabelled healthy samples first, then
(for a new alert or low-confidence window only) the oldest unlabelled others; labelled
windows are never evicted. When nothing may go, the new record is refused (``quota``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from edgevib.cloud.errors import CloudError
from edgevib.cloud.store import TABLES, Store
from edgevib.edge.collect import TokenBucket

from edgevib.protocol import PREFIX, parse_topic
from edgevib.protocol.errors import FrameError, ProtocolError
from edgevib.protocol.evidence import BEARING_KEYS, EvidenceRecord, decode, geometry_of

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
COLS = [c.split()[0] for c in TABLES["evidence"][0]]


def row_geometry(row: dict[str, Any]) -> Any:
    """The sensor's :class:`~edgevib.models.bearing.BearingGeometry` of an evidence row, or None
    (a record from an agent that did not send its bearing)."""
    if any(row.get(k) is None for k in BEARING_KEYS):
        return None
    return geometry_of(row)


class EvidenceReader:
    """Read-only access to the evidence rows and their window files (dashboard, retrain worker)."""

    def __init__(self, store: Store, root: Path | str) -> None:
        self.store, self.root = store, Path(root)

    def _rows(self, where: str = "", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [dict(zip(COLS, r, strict=True)) for r in
                self.store.query(f"SELECT {', '.join(COLS)} FROM evidence {where}", tuple(params))]

    def load(self, row: dict[str, Any]) -> F32:
        """The window of one row (float32, at ``row['sample_rate']``)."""
        try:
            return np.asarray(np.load(self.root / row["path"], allow_pickle=False), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise CloudError("cloud.dataset", f"window file of evidence {row['id']} ({exc})",
                             "the dataset directory lost a file; drop the row or restore the file") from exc

    def _stack(self, rows: list[dict[str, Any]]) -> F32:
        xs = [self.load(r) for r in rows]
        if len({len(x) for x in xs}) > 1:
            raise CloudError("cloud.dataset", f"windows of lengths {sorted({len(x) for x in xs})}",
                             "select one model's evidence (model_name=...)")
        return np.stack(xs) if xs else np.zeros((0, 0), np.float32)

    def labelled_windows(self, *, since_ms: int | None = None, model_name: str | None = None
                         ) -> tuple[F32, list[str], list[dict[str, Any]]]:
        """(N, W) float32 windows, their labels and rows, labelled at or after ``since_ms``."""
        where, params = ["label IS NOT NULL"], list[Any]()
        if since_ms is not None:
            where.append("labelled_ms >= ?")
            params.append(since_ms)
        if model_name is not None:
            where.append("model_name = ?")
            params.append(model_name)
        rows = self._rows("WHERE " + " AND ".join(where) + " ORDER BY labelled_ms, t_ms, id", params)
        return self._stack(rows), [str(r["label"]) for r in rows], rows

    def windows(self, ids: Iterable[str]) -> F32:
        """The windows of ``ids``, in that order (unknown id: CloudError)."""
        ids = list(ids)
        by_id = {r["id"]: r for r in self._rows(f"WHERE id IN ({', '.join('?' * len(ids))})", ids)} if ids else {}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise CloudError("cloud.dataset", f"unknown evidence ids {missing[:5]}", "use ids from the evidence table")
        return self._stack([by_id[i] for i in ids])

    def for_alert(self, alert_id: str) -> list[dict[str, Any]]:
        """Evidence rows behind one alert, oldest window first."""
        return self._rows("WHERE alert_id = ? ORDER BY t_ms, id", (alert_id,))

    def recent(self, site: str, gateway: str, sensor: str, limit: int = 20) -> list[dict[str, Any]]:
        """A sensor's newest evidence rows (newest first); :meth:`load` gives a row's window."""
        return self._rows("WHERE site = ? AND gateway = ? AND sensor = ? ORDER BY t_ms DESC, id LIMIT ?",
                          (site, gateway, sensor, int(limit)))

    def summary(self) -> dict[str, Any]:
        """Rows, bytes and labelled rows per reason."""
        rows = self.store.query("SELECT reason, COUNT(*), COALESCE(SUM(nbytes), 0), COUNT(label) FROM evidence "
                                "GROUP BY reason ORDER BY reason")
        return {"by_reason": {r: {"rows": int(n), "bytes": int(b), "labelled": int(lab)} for r, n, b, lab in rows}}


class EvidenceStore(EvidenceReader):
    """:meth:`put` from the collector, :meth:`set_label` for labels, plus the readers."""

    def __init__(self, store: Store, root: Path | str, *, max_bytes: int = 2**30,
                 max_per_gateway_per_min: float = 600.0, clock: Callable[[], float] = time.time,
                 topic_prefix: str = PREFIX) -> None:
        if max_bytes < 1 or not max_per_gateway_per_min > 0:
            raise CloudError("cloud.dataset", f"max_bytes={max_bytes}, per_gateway_per_min={max_per_gateway_per_min}",
                             "use positive bounds")
        super().__init__(store, root)
        self.clock, self.topic_prefix = clock, topic_prefix
        self.max_bytes, self.rate = max_bytes, max_per_gateway_per_min
        self.root.mkdir(parents=True, exist_ok=True)
        self.stored, self.evicted = 0, 0
        self.rejected: Counter[str] = Counter()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------
    def put(self, payload: bytes, topic: str) -> str | None:
        """Validate and store one evidence message; its id, or None (counted in ``rejected``)."""
        try:
            info = parse_topic(topic, self.topic_prefix)
            if info.kind != "evidence":
                raise ProtocolError("bad_topic", f"topic {topic!r}", "publish evidence on .../evidence")
        except ProtocolError as exc:
            return self._reject(exc.reason, exc)
        with self._lock:
            bucket = self._buckets.setdefault((info.site, info.gateway),
                                              TokenBucket(self.rate / 60, self.rate, self.clock))
            if not bucket.take():
                return self._reject("rate_limited")
        try:
            rec = decode(payload)
        except FrameError as exc:
            return self._reject(exc.reason, exc)
        if (rec.site, rec.gateway) != (info.site, info.gateway):
            return self._reject("topic_mismatch", CloudError(
                "cloud.dataset", f"record of {rec.site}/{rec.gateway} on {topic}", "publish on the record's own topic"))
        with self._lock:
            return self._store(rec)

    def _store(self, rec: EvidenceRecord) -> str | None:
        old = self._rows("WHERE id = ?", (rec.id,))
        label = old[0]["label"] if old else None
        labelled_ms = old[0]["labelled_ms"] if old else None
        reason, alert_id = rec.reason, rec.alert_id
        if old and old[0]["reason"] == "alert" and reason != "alert":  # an alert's claim on a window stays
            reason, alert_id = "alert", old[0]["alert_id"]
        if label is None and alert_id is not None:  # evidence arriving after its alert was labelled
            got = self.store.query("SELECT cls, labelled_ms FROM labels WHERE alert_id = ?", (alert_id,))
            label, labelled_ms = got[0] if got else (None, None)
        path = self.root / rec.site / rec.gateway / f"{rec.id}.npy"
        nbytes = 128 + 4 * rec.window.size  # .npy header + float32 samples
        if not old and not self._make_room(nbytes, reason):
            return self._reject("quota")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, rec.window.astype("<f4"), allow_pickle=False)
        os.replace(tmp, path)
        self.store.upsert("evidence", [{
            "id": rec.id, "site": rec.site, "gateway": rec.gateway, "sensor": rec.sensor,
            "t_ms": rec.t_ns // 1_000_000, "rpm": rec.rpm, "sample_rate": round(rec.sample_rate),
            "reason": reason, "alert_id": alert_id, "pred_cls": rec.pred_cls, "probability": rec.probability,
            "model_name": rec.model["name"], "model_version": rec.model["version"],
            "model_sha256": rec.model["sha256"], "label": label, "labelled_ms": labelled_ms,
            "path": str(path.relative_to(self.root)), "nbytes": nbytes,
            "stored_ms": old[0]["stored_ms"] if old else int(self.clock() * 1000),
            **(rec.bearing or dict.fromkeys(BEARING_KEYS))}])
        self.stored += 1
        return rec.id

    def _make_room(self, need: int, reason: str) -> bool:
        used = int(self.store.query("SELECT COALESCE(SUM(nbytes), 0) FROM evidence")[0][0])
        while used + need > self.max_bytes:
            victim = self.store.query(
                "SELECT id, path, nbytes FROM evidence WHERE label IS NULL AND reason = 'healthy_sample' "
                "ORDER BY stored_ms, id LIMIT 1")
            if not victim and reason != "healthy_sample":
                victim = self.store.query("SELECT id, path, nbytes FROM evidence WHERE label IS NULL "
                                          "ORDER BY stored_ms, id LIMIT 1")
            if not victim:
                return False
            vid, vpath, vbytes = victim[0]
            self._exec("DELETE FROM evidence WHERE id = ?", (vid,))
            (self.root / vpath).unlink(missing_ok=True)
            used -= int(vbytes)
            self.evicted += 1
        return True

    def _reject(self, reason: str, exc: Exception | None = None) -> str | None:
        """Count a refused record; always None (what :meth:`put` returns for it)."""
        self.rejected[reason] += 1
        if self.rejected[reason] <= 3 or self.rejected[reason] % 1000 == 0:
            log.warning("evidence rejected #%d (%s): %s", self.rejected[reason], reason, exc or "")
        return None

    def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        cur = self.store.conn.execute(sql.replace("?", self.store.ph), params)
        return int(cur.rowcount)

    def set_label(self, where: str, params: tuple[Any, ...], cls: str, labelled_ms: int) -> int:
        """Label the rows matching ``where`` (e.g. ``alert_id = ?``); how many rows changed."""
        with self._lock:
            return self._exec(f"UPDATE evidence SET label = ?, labelled_ms = ? WHERE {where}", (cls, labelled_ms, *params))

    def summary(self) -> dict[str, Any]:
        """Rows/bytes/labelled per reason, and this process's counters."""
        return {**super().summary(), "stored": self.stored, "evicted": self.evicted, "rejected": dict(self.rejected)}
