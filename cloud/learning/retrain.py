"""The retrain worker: retrain trigger -> candidate model -> promotion gate -> registry -> push.

The Flink job writes ``retrain_triggers`` (enough newly labelled windows, or anomaly drift);
this worker owns ``retrain_runs``: it claims each trigger once, retrains NSAE-LCN (or the CNN,
``retrain.arch``) on the fixed
base training set plus the operators' labelled evidence windows, and evaluates the current and
the candidate model on

* the fixed held-out set of the base dataset (it never changes, so runs compare), and
* the newest labelled evidence windows, held out by time per sensor with a gap of one window
  duration (overlapping windows of one stream would otherwise leak into the evaluation).

**Promotion gate**: promote only if the candidate is not worse on the fixed held-out set by
more than ``tolerance_pt`` points and better on the new data by at least ``min_gain_pt`` points.
The decision and every number go to ``retrain_runs`` and the model card; a promoted model is
signed into the registry and pushed (staged, see :mod:`edgevib.cloud.rollout`).

``retrain.arch = "faulttype"`` (the default model's arch) *adapts* the running fault-type
model instead of retraining from scratch (``retrain.method``: finetune, rkd, ke or mlp,
:mod:`edgevib.models.adapt`). The base is then a set of order features (the fleet's replay
and held-out windows, :func:`save_faulttype_base`); the labelled evidence windows become
order features from their stored ``rpm`` and bearing (rows without either are left out);
labels count as fault types (``OR007`` -> ``OR``). The running model's weights are read back
from its ONNX initializers when it is a logistic regression (the fleet model or a fine-tuned
one); when it is an adapted MLP, the fleet logistic regression is refitted on the base's
replay set (deterministic) and adaptation starts from there.

>>> g = gate(old_holdout=98.9, new_holdout=98.5, old_new=0.0, new_new=100.0, tolerance_pt=1.0, min_gain_pt=5.0)
>>> g.promote, g.reasons
(True, [])
>>> gate(98.9, 96.0, 0.0, 100.0, 1.0, 5.0).reasons
['held-out accuracy 96.00 % is 2.90 pt below the current 98.90 % (tolerance 1.00 pt)']
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.cloud.config import RetrainConfig
from edgevib.cloud.errors import CloudError
from edgevib.cloud.store import Store
from edgevib.models import arch as archs

from edgevib.extras import require

log = logging.getLogger(__name__)
_COMP = "cloud.retrain"


@dataclass(frozen=True)
class Gate:
    promote: bool
    reasons: list[str]
    numbers: dict[str, float]


def gate(old_holdout: float, new_holdout: float, old_new: float, new_new: float,
         tolerance_pt: float, min_gain_pt: float) -> Gate:
    """The promotion decision on accuracies in percent (see the module docstring)."""
    reasons = []
    if new_holdout < old_holdout - tolerance_pt:
        reasons.append(f"held-out accuracy {new_holdout:.2f} % is {old_holdout - new_holdout:.2f} pt below the "
                       f"current {old_holdout:.2f} % (tolerance {tolerance_pt:.2f} pt)")
    if new_new < old_new + min_gain_pt:
        reasons.append(f"new-data accuracy {new_new:.2f} % is not {min_gain_pt:.2f} pt above the current "
                       f"{old_new:.2f} %")
    nums = {"old_holdout": old_holdout, "new_holdout": new_holdout, "old_new": old_new, "new_new": new_new,
            "tolerance_pt": tolerance_pt, "min_gain_pt": min_gain_pt}
    return Gate(not reasons, reasons, nums)


# -- data ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Base:
    """The fixed dataset: training windows and the held-out windows every run is judged on."""

    x_train: np.ndarray
    y_train: np.ndarray  # class names
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    fs: float
    kind: str = "windows"  # "orders": x_* are order features [N, 20] (save_faulttype_base)
    rig_train: np.ndarray | None = None  # "orders": each training window's rig (the replay set's cells)


def save_base(path: str | Path, train: Any, holdout: Any) -> Path:
    """Write two :class:`~edgevib.models.split.WindowSet` as the worker's base ``.npz``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    names = (lambda ws: np.asarray(ws.classes)[ws.y])  # noqa: E731 - local, used twice
    np.savez(p, x_train=train.x.astype(np.float32), y_train=names(train), x_holdout=holdout.x.astype(np.float32),
             y_holdout=names(holdout), fs=np.float64(train.fs))
    return p


def save_faulttype_base(path: str | Path, train: Any, holdout: Any) -> Path:
    """Write two :class:`~edgevib.models.faulttype.FeatureSet` (order features of the fleet's
    windows: the replay set and the fixed held-out set) as a ``faulttype`` base ``.npz``."""
    from edgevib.models.data import MODEL_FS  # noqa: PLC0415
    from edgevib.models.faulttype import CLASSES  # noqa: PLC0415

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    names = np.asarray(CLASSES)
    np.savez(p, kind=np.str_("orders"), x_train=train.x.astype(np.float32), y_train=names[train.y],
             rig_train=train.rig.astype(str), x_holdout=holdout.x.astype(np.float32), y_holdout=names[holdout.y],
             fs=np.float64(MODEL_FS))
    return p


def load_base(path: str | Path) -> Base:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            kind = str(z["kind"]) if "kind" in z.files else "windows"
            return Base(z["x_train"], z["y_train"].astype(str), z["x_holdout"], z["y_holdout"].astype(str),
                        float(z["fs"]), kind, z["rig_train"].astype(str) if kind == "orders" else None)
    except (OSError, KeyError, ValueError) as exc:
        raise CloudError(_COMP, f"base dataset {str(p)!r}: {exc}",
                         "write it with edgevib.cloud.learning.retrain.save_base (set retrain.base)") from exc


def split_new(rows: Sequence[dict[str, Any]], frac: float, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, eval) of labelled evidence rows: per sensor and class, the newest ``frac``
    evaluate; training windows closer than one window duration to them are dropped (overlap)."""
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["site"], r["gateway"], r["sensor"], r["label"]), []).append(i)
    tr: list[int] = []
    ev: list[int] = []
    for idx in groups.values():
        idx.sort(key=lambda i: int(rows[i]["t_ms"]))
        n_eval = int(np.ceil(len(idx) * frac - 1e-9)) if len(idx) >= 3 else 0
        if n_eval == 0:
            tr += idx
            continue
        head, tail = idx[:-n_eval], idx[-n_eval:]
        t_cut = int(rows[tail[0]]["t_ms"]) - window_s * 1000
        ev += tail
        tr += [i for i in head if int(rows[i]["t_ms"]) <= t_cut]
    return np.asarray(sorted(tr), dtype=np.int64), np.asarray(sorted(ev), dtype=np.int64)


def accuracy(model: bytes | str | Path, *sets: tuple[Any, ...]) -> list[float]:
    """Percent of windows whose top class name equals ``y``, per set (0 for an empty set); one
    onnxruntime session for all of them. A set is ``(x, y)`` with windows ``x`` [N, W], or
    ``(x, y, orders)`` for a two-input model (``orders`` [N, 20]; ``x`` may then be None: the
    fault-type graph does not read it, so zeros are fed)."""
    from edgevib.models.contract import meta_of_session, open_session  # noqa: PLC0415

    sess, name = open_session(model)
    meta = meta_of_session(sess, name)
    classes = np.asarray(meta.classes)
    out = []
    for x, y, *aux in sets:
        n = len(y)
        if n == 0:
            out.append(0.0)
            continue
        if meta.aux_size and not aux:
            raise CloudError(_COMP, f"{name} takes a second input ({meta.aux_input}) and the set has none",
                             "pass (x, y, orders) sets for a two-input model")
        preds = []
        for i in range(0, n, 256):
            j = min(n, i + 256)
            xb = np.zeros((j - i, 1, meta.window), np.float32) if x is None else x[i:j, None, :].astype(np.float32)
            feed = {"x": xb} | ({"orders": np.asarray(aux[0][i:j], np.float32)} if meta.aux_size else {})
            preds.append(sess.run(None, feed)[0].argmax(1))
        out.append(float(np.mean(classes[np.concatenate(preds)] == np.asarray(y)) * 100))
    return out


def fleet_lr(model: bytes | str | Path) -> Any:
    """The :class:`~edgevib.models.faulttype.FaultTypeModel` of a logistic-regression ONNX model
    (its ``mean``/``scale``/``weight``/``bias`` initializers; the temperature is already folded
    into weight and bias), or None when the graph is something else (an adapted MLP)."""
    require("onnx", extra="train", feature="reading a model's weights")
    import onnx  # noqa: PLC0415
    from edgevib.models.faulttype import FaultTypeModel  # noqa: PLC0415

    proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    w = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    if not {"mean", "scale", "weight", "bias"} <= set(w):
        return None
    return FaultTypeModel(w["mean"], w["scale"], w["weight"], w["bias"], 1.0)


def n_params(model: Any) -> int:
    """Trained weights and biases of an adapted model (standardisation not counted)."""
    if hasattr(model, "layers"):
        return int(sum(w.size + b.size for w, b in model.layers))
    return int(model.weight.size + model.bias.size)


# -- the worker ----------------------------------------------------------------------------------------

@dataclass
class RunResult:
    trigger_id: str
    status: str  # promoted | rejected | failed | skipped
    decision: str
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class Worker:
    """Claims pending triggers from the store and runs them, one at a time.

    ``evidence`` is an :class:`edgevib.cloud.learning.dataset.EvidenceStore`; ``push`` defaults to
    :func:`edgevib.cloud.rollout.push` with the cloud's broker URL.
    """

    def __init__(self, cfg: RetrainConfig, store: Store, evidence: Any, *, broker_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        if not cfg.base:
            raise CloudError(_COMP, "retrain.base is empty", "build the base dataset (save_base) and set retrain.base")
        self.cfg, self.store, self.evidence, self.broker_url, self.clock = cfg, store, evidence, broker_url, clock
        self.base = load_base(cfg.base)
        self.arch = archs.get(cfg.arch)
        if self.arch.data != self.base.kind:
            raise CloudError(_COMP, f"retrain.arch={cfg.arch!r} with a base of {self.base.kind} ({cfg.base})",
                             "build the base for that arch: edgevib cloud base --arch "
                             f"{'faulttype' if self.arch.data == 'orders' else 'windows'} ...")

    def pending(self) -> list[dict[str, Any]]:
        cols = ("id", "reason", "model_name", "site", "gateway", "n_windows", "ts_ms", "detail")
        rows = self.store.query(f"SELECT {', '.join('t.' + c for c in cols)} FROM retrain_triggers t "
                                "LEFT JOIN retrain_runs r ON r.trigger_id = t.id WHERE r.trigger_id IS NULL "
                                "ORDER BY t.ts_ms")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def _record(self, tid: str, status: str, **kw: Any) -> None:
        row = {"trigger_id": tid, "status": status, **kw}
        self.store.upsert("retrain_runs", [row])

    def run_pending(self) -> list[RunResult]:
        out = []
        for trig in self.pending():
            started = int(self.clock() * 1000)
            self._record(trig["id"], "running", started_ms=started, model_name=trig["model_name"])
            try:
                res = self.run_trigger(trig)
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the worker
                log.exception("retrain %s failed", trig["id"])
                res = RunResult(trig["id"], "failed", f"{type(exc).__name__}: {exc}")
            self._record(trig["id"], res.status, started_ms=started, finished_ms=int(self.clock() * 1000),
                         decision=res.decision, model_name=trig["model_name"], model_version=res.version,
                         metrics=json.dumps({**res.metrics, "seconds": res.seconds}, sort_keys=True),
                         detail=json.dumps(res.rollout, sort_keys=True) if res.rollout is not None else None)
            log.info("retrain %s: %s (%s)", trig["id"], res.status, res.decision)
            out.append(res)
        return out

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_pending()
            stop.wait(self.cfg.poll_s)

    # -- one trigger ---------------------------------------------------------------------------
    def _current(self, registry: Any, name: str) -> Any:
        from edgevib.models.registry import RegistryError  # noqa: PLC0415

        try:
            return registry.get(name)
        except RegistryError as exc:
            raise CloudError(_COMP, f"no model named {name!r} in the registry {self.cfg.registry!r}",
                             "add the running model first: edgevib models add MODEL.onnx --name NAME") from exc

    def run_trigger(self, trig: dict[str, Any]) -> RunResult:
        from edgevib.models.registry import Registry  # noqa: PLC0415

        t0 = time.perf_counter()
        secs: dict[str, float] = {}
        registry = Registry(Path(self.cfg.registry), private_key=Path(self.cfg.private_key)
                            if self.cfg.private_key else None)
        entry = self._current(registry, trig["model_name"])
        cur, cur_path = entry.manifest, entry.model_path
        if self.arch.data == "orders":
            return self._run_faulttype(trig, registry, entry, t0, secs)
        x, y, rows = self.evidence.labelled_windows(model_name=trig["model_name"])
        if len(x) == 0:
            return RunResult(trig["id"], "skipped", "no labelled evidence windows for this model")
        y = np.asarray(y).astype(str)
        tr, ev = split_new(rows, self.cfg.new_eval_frac, x.shape[1] / self.base.fs)
        if len(ev) == 0:
            return RunResult(trig["id"], "skipped", f"{len(x)} labelled windows: too few to hold any out for evaluation")
        secs["data"] = time.perf_counter() - t0
        version = _next_version(cur.version)
        onnx_bytes = self._train(x[tr], y[tr], version)
        secs["train"] = time.perf_counter() - t0 - sum(secs.values())
        b = self.base
        sets = ((b.x_holdout, b.y_holdout), (x[ev], y[ev]))
        (old_hold, old_new), (new_hold, new_new) = accuracy(cur_path, *sets), accuracy(onnx_bytes, *sets)
        g = gate(old_hold, new_hold, old_new, new_new, self.cfg.tolerance_pt, self.cfg.min_gain_pt)
        secs["evaluate"] = time.perf_counter() - t0 - sum(secs.values())
        metrics = {**g.numbers, "n_new_train": int(len(tr)), "n_new_eval": int(len(ev)),
                   "n_holdout": int(len(b.y_holdout)), "new_classes": sorted(set(y.tolist())),
                   "from_version": cur.version, "compress": self.cfg.compress_step() or "none",
                   "onnx_bytes": len(onnx_bytes)}
        return self._finish(trig, registry, cur, g, metrics, version, onnx_bytes, _card(trig, g, metrics, version),
                            t0, secs)

    def _finish(self, trig: dict[str, Any], registry: Any, cur: Any, g: Gate, metrics: dict[str, Any], version: str,
                onnx_bytes: bytes, card_text: str, t0: float, secs: dict[str, float]) -> RunResult:
        """Gate decided: reject, or sign into the registry (with the card) and push."""
        if not g.promote:
            return RunResult(trig["id"], "rejected", "; ".join(g.reasons), version, metrics, seconds=secs)
        path = Path(self.cfg.registry) / f".candidate-{version}.onnx"
        card = path.with_suffix(".md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(onnx_bytes)
        card.write_text(card_text)
        try:
            man = registry.add(path, version=version, metrics=metrics, card=card, name=cur.name)
        finally:
            path.unlink(missing_ok=True)
            card.unlink(missing_ok=True)
        rollout = self._push(registry, man, trig) if self.cfg.push else None
        secs["push"] = time.perf_counter() - t0 - sum(secs.values())
        ok = rollout is None or rollout.get("status") in ("completed", "done", "ok")
        return RunResult(trig["id"], "promoted" if ok else "rollout_halted",
                         "promoted: " + _summary(g) + ("" if ok else f"; rollout {rollout}"),
                         version, metrics, rollout, secs)

    def _run_faulttype(self, trig: dict[str, Any], registry: Any, entry: Any, t0: float,
                       secs: dict[str, float]) -> RunResult:
        """``retrain.arch = "faulttype"``: adapt the running fault-type model to the labels."""
        require("onnx", extra="train", feature="adapting the fault-type model")
        from edgevib.cloud.learning.dataset import row_geometry  # noqa: PLC0415
        from edgevib.models import adapt  # noqa: PLC0415
        from edgevib.models.classes import fault_type  # noqa: PLC0415
        from edgevib.models.contract import ModelMeta, attach, read_meta  # noqa: PLC0415
        from edgevib.models.faulttype import CLASSES, FeatureSet, train  # noqa: PLC0415
        from edgevib.models.orders import KIND, fault_frequencies, order_features  # noqa: PLC0415

        cur, cur_path, b, cfg = entry.manifest, entry.model_path, self.base, self.cfg
        x, labels, rows = self.evidence.labelled_windows(model_name=trig["model_name"])
        keep = [i for i, r in enumerate(rows) if r.get("rpm") and row_geometry(r) is not None]
        if not keep:
            return RunResult(trig["id"], "skipped", f"{len(rows)} labelled windows, none with rpm and bearing "
                             "(agents older than the bearing in evidence records): no order features")
        x, rows = x[keep], [rows[i] for i in keep]
        y = np.asarray([fault_type(str(labels[i])) for i in keep])
        tr, ev = split_new(rows, cfg.new_eval_frac, x.shape[1] / b.fs)
        if len(ev) == 0:
            return RunResult(trig["id"], "skipped", f"{len(x)} labelled windows: too few to hold any out for evaluation")
        feats = np.zeros((len(x), b.x_train.shape[1]), np.float32)
        groups: dict[tuple[Any, float, float], list[int]] = {}
        for i, r in enumerate(rows):  # one order_features call per (bearing, speed, rate)
            groups.setdefault((row_geometry(r), float(r["rpm"]), float(r["sample_rate"])), []).append(i)
        for (geo, rpm, fs), idx in groups.items():
            feats[idx] = order_features(x[idx], fs, fault_frequencies(geo, rpm))
        secs["data"] = time.perf_counter() - t0

        cidx = {c: i for i, c in enumerate(CLASSES)}
        rig = b.rig_train if b.rig_train is not None else np.full(len(b.y_train), "fleet")
        replay = FeatureSet(b.x_train, np.asarray([cidx[c] for c in b.y_train], np.int64), rig,
                            np.zeros(len(b.y_train), np.int64), np.zeros(len(b.y_train), np.float32))
        fleet_model = fleet_lr(cur_path)
        start = "the running model's weights"
        if fleet_model is None:  # an adapted MLP runs: start again from the fleet logistic regression
            fleet_model, start = train(replay), "the fleet logistic regression refitted on the base"
        site = FeatureSet(feats[tr], np.asarray([cidx[c] for c in y[tr]], np.int64), np.full(len(tr), "site"),
                          np.zeros(len(tr), np.int64), np.zeros(len(tr), np.float32))
        model = adapt.adapt(cfg.method, adapt.Fleet(fleet_model, replay), site, seed=cfg.seed)
        old_meta = read_meta(cur_path)
        version = _next_version(cur.version)
        n_labels = len({r.get("alert_id") or r["id"] for r in (rows[i] for i in tr)})
        meta = ModelMeta(CLASSES, b.fs, old_meta.window, old_meta.hop, model.arch, version,
                         trained_on=f"{cfg.method} of v{cur.version} on {len(tr)} labelled evidence windows "
                                    f"({n_labels} labels) + the fleet replay set", aux_input=KIND)
        onnx_bytes = bytes(attach(model.to_onnx(old_meta.window), meta).SerializeToString())
        secs["train"] = time.perf_counter() - t0 - sum(secs.values())

        sets = ((None, b.y_holdout, b.x_holdout), (x[ev], y[ev], feats[ev]))
        (old_hold, old_new), (new_hold, new_new) = accuracy(cur_path, *sets), accuracy(onnx_bytes, *sets)
        g = gate(old_hold, new_hold, old_new, new_new, cfg.tolerance_pt, cfg.min_gain_pt)
        secs["evaluate"] = time.perf_counter() - t0 - sum(secs.values())
        metrics = {**g.numbers, "n_new_train": int(len(tr)), "n_new_eval": int(len(ev)),
                   "n_holdout": int(len(b.y_holdout)), "new_classes": sorted(set(y.tolist())),
                   "from_version": cur.version, "method": cfg.method, "n_labels": n_labels, "arch": model.arch,
                   "n_params": n_params(model), "onnx_bytes": len(onnx_bytes), "adapted_from": start,
                   "n_left_out_no_bearing": len(labels) - len(keep)}
        return self._finish(trig, registry, cur, g, metrics, version, onnx_bytes,
                            _card(trig, g, metrics, version) + _adapt_card(metrics), t0, secs)

    def _train(self, x_new: np.ndarray, y_new: np.ndarray, version: str) -> bytes:
        require("onnx", extra="train", feature="exporting retrained models")
        from edgevib.models.contract import ModelMeta, attach  # noqa: PLC0415
        from edgevib.models.split import WindowSet  # noqa: PLC0415

        b, cfg = self.base, self.cfg
        classes = tuple(dict.fromkeys([*sorted(set(b.y_train.tolist()), key=_class_key),
                                       *sorted(set(y_new.tolist()), key=_class_key)]))
        # NSAE-LCN's softmax sees windows as they come: a new class arriving with a few dozen
        # windows against hundreds per known class is repeated up to the median class size.
        # The CNN samples balanced over classes by itself.
        per_class = np.median([np.sum(b.y_train == c) for c in set(b.y_train.tolist())])
        reps = 1 if self.arch.balanced else max(1, int(per_class // max(1, len(x_new))))
        xs = np.concatenate([b.x_train, *[x_new] * reps]).astype(np.float32)
        ys = np.concatenate([b.y_train, *[y_new] * reps])
        idx = {c: i for i, c in enumerate(classes)}
        n = len(xs)
        # each window its own recording: the CNN's crops then never span two windows
        ws = WindowSet(xs, np.asarray([idx[c] for c in ys], np.int64), classes, np.arange(n),
                       np.zeros(n, np.int64), tuple(f"w{i}" for i in range(n)), b.fs, np.zeros(n))
        trained_on = f"base + {len(x_new)} labelled evidence windows"
        trainer = self.arch.load()  # MissingExtraError names the extra (torch for the CNN)
        model = trainer.train(ws, seed=cfg.seed, **{kw: getattr(cfg, field) for kw, field in self.arch.retrain_opts})
        meta = ModelMeta(classes, b.fs, ws.window, ws.window // 2, model.arch, version, trained_on=trained_on)
        proto = attach(model.to_onnx(), meta)
        step = cfg.compress_step()
        if step:
            proto = self._compress(step, model, proto, ws)
        return bytes(proto.SerializeToString())

    def _compress(self, step: str, model: Any, proto: Any, ws: Any) -> Any:
        """``proto`` compressed by ``step`` (models.compress): what the gate then judges and what ships.

        ``dfq``: INT8 from the trained weights alone (cross-layer equalisation, bias correction,
        ranges from batch norm), seconds; ``int8``: static INT8 calibrated on base windows.
        """
        from edgevib.models.compress import onnxio, quantize  # noqa: PLC0415

        t = time.perf_counter()
        before = proto.ByteSize()  # the size without serialising it
        if step == "dfq":
            from edgevib.models.compress import pipeline  # noqa: PLC0415

            out = pipeline.run(model, ["dfq"], meta=onnxio.read_meta(proto))[-1].proto
        else:
            idx = np.random.default_rng(self.cfg.seed).permutation(len(ws))[:256]
            out = quantize.quantize_int8_static(proto, ws.x3d()[np.sort(idx)])
        log.info("retrain: %s compressed by %s: %d -> %d bytes of ONNX in %.1f s", onnxio.read_meta(out).get(
            "edgevib.arch"), step, before, out.ByteSize(), time.perf_counter() - t)
        return out

    def _push(self, registry: Any, man: Any, trig: dict[str, Any]) -> dict[str, Any]:
        from edgevib.cloud.rollout import push  # noqa: PLC0415

        if self.cfg.push_to == "trigger":
            names = json.loads(trig.get("detail") or "{}").get("gateways") or [f"{trig['site']}/{trig['gateway']}"]
            targets = [tuple(g.split("/", 1)) for g in names]
        else:
            targets = [(g["site"], g["gateway"]) for g in self.store.gateways().values()
                       if g.get("model_name") == man.name]
        if not targets:
            return {"status": "no_targets"}
        res = push(registry, man.name, man.version, targets, broker_url=self.broker_url,
                   canary_pct=self.cfg.canary_pct, timeout_s=self.cfg.push_timeout_s, store=self.store)
        return asdict(res) if hasattr(res, "__dataclass_fields__") else dict(vars(res))


def _class_key(c: str) -> tuple[int, str]:
    return (0 if c == "normal" else 1, c)


def _next_version(v: str) -> str:
    return str(int(v) + 1) if v.isdigit() else f"{v}.1"


def _summary(g: Gate) -> str:
    n = g.numbers
    return (f"held-out {n['old_holdout']:.2f} -> {n['new_holdout']:.2f} % (tolerance {n['tolerance_pt']:.1f} pt), "
            f"new data {n['old_new']:.2f} -> {n['new_new']:.2f} % (min gain {n['min_gain_pt']:.1f} pt)")


def _card(trig: dict[str, Any], g: Gate, metrics: dict[str, Any], version: str) -> str:
    return (f"# {trig['model_name']} v{version} (retrained)\n\nTrigger `{trig['id']}` ({trig['reason']}, "
            f"{trig['n_windows']} labelled windows). Base model v{metrics['from_version']}.\n\n"
            f"Promotion gate: {'PROMOTED' if g.promote else 'REJECTED'}: {_summary(g)}.\n\n"
            f"New classes seen in labels: {', '.join(metrics['new_classes'])}; new windows: "
            f"{metrics['n_new_train']} trained on, {metrics['n_new_eval']} held out by time; fixed held-out "
            f"set: {metrics['n_holdout']} windows.\n"
            + (f"\nShips compressed by `{metrics['compress']}` ({metrics['onnx_bytes']:,} bytes of ONNX); the gate "
               "judged the compressed model.\n" if metrics.get("compress", "none") != "none" else ""))


def _adapt_card(m: dict[str, Any]) -> str:
    lr = m["arch"].startswith("faulttype-lr")
    return (f"\n## Site adaptation\n\nMethod `{m['method']}` (docs/adapt.md), adapted from {m['adapted_from']}, on "
            f"{m['n_labels']} labels ({m['n_new_train']} labelled windows; labels count as fault types"
            f"{'; ' + str(m['n_left_out_no_bearing']) + ' windows without rpm/bearing left out' if m['n_left_out_no_bearing'] else ''}"
            f").\n\n| | running v{m['from_version']} | candidate |\n|---|---:|---:|\n"
            f"| fixed fleet feature set ({m['n_holdout']} windows) | {m['old_holdout']:.2f} % | {m['new_holdout']:.2f} % |\n"
            f"| site's held-out labelled windows ({m['n_new_eval']}) | {m['old_new']:.2f} % | {m['new_new']:.2f} % |\n"
            f"\nWhat ships: `{m['arch']}`, {m['n_params']:,} trained parameters (plus 40 of standardisation), "
            f"{m['onnx_bytes']:,} bytes of ONNX, the same two-input contract as the fleet model (`x` + `orders`, "
            f"`edgevib.orders/1`). "
            + ("A logistic regression that small needs no compression." if lr else
               "Shipped as float32 without compression: a few KB, microseconds per window beside the "
               "~0.6 ms of order features; compressing it would save nothing that matters on the gateway.")
            + "\n")
