"""``edgevib cloud run|bridge|collect|job|retrain|base|status|maintain|config``: the fleet aggregation job and its tools."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from edgevib.cloud.config import CloudConfig, load_config

from edgevib.config import describe

log = logging.getLogger(__name__)


def _cfg(args: argparse.Namespace) -> CloudConfig:
    over: dict[str, Any] = {}
    if getattr(args, "broker", None):
        over["broker_url"] = args.broker
    if getattr(args, "store", None):
        over["store_url"] = args.store
    bridge = {k: v for k in ("client_id", "share_group") if (v := getattr(args, k, None)) is not None}
    if bridge:
        over["bridge"] = bridge
    return load_config(args.config, overrides=over)


def _run(args: argparse.Namespace) -> int:
    """Bridge (threads) + job (mini-cluster) in this process, until Ctrl-C."""
    from edgevib.cloud.flink.job import JOB_NAME, build, latest_checkpoint  # noqa: PLC0415
    from edgevib.cloud.ingest.bridge import Bridge  # noqa: PLC0415
    from edgevib.cloud.ingest.collector import Collector  # noqa: PLC0415

    cfg = _cfg(args)
    bridge = Bridge(cfg)
    bridge.start()
    collector = Collector(cfg)  # evidence windows -> dataset store, next to the bridge
    collector.start()
    stop = threading.Event()
    if cfg.retrain.base:  # the retrain worker works off the job's triggers in a thread
        threading.Thread(target=_worker(cfg).run, args=(stop,), name="retrain", daemon=True).start()
    else:
        log.info("cloud: no retrain worker (set retrain.base to a dataset from `edgevib cloud base`)")
    threading.Thread(target=_retention_loop, args=(cfg, stop), name="retention", daemon=True).start()
    try:
        restore = None if args.fresh else latest_checkpoint(cfg.checkpoint_dir)
        log.info("cloud: job starting (restore from %s); store %s", restore or "nothing", cfg.store_url)
        build(cfg, restore).execute(JOB_NAME)
    finally:
        stop.set()
        collector.stop()
        bridge.stop()
    return 0


def _retention_loop(cfg: CloudConfig, stop: threading.Event, first_s: float = 60.0) -> None:
    """``[retention]`` every ``retention.interval_s`` (the first run ``first_s`` after start), until ``stop``.

    Never VACUUMs: on SQLite that would hold the write lock while the job writes (freed pages
    are reused by new rows; shrink the file with ``edgevib cloud maintain --vacuum``).
    """
    from edgevib.cloud.retention import Retention  # noqa: PLC0415
    from edgevib.cloud.store import Store  # noqa: PLC0415

    wait = min(first_s, cfg.retention.interval_s)
    while not stop.wait(wait):
        wait = cfg.retention.interval_s
        try:
            store = Store(cfg.store_url)
            try:
                report = Retention(store, cfg.retention, evidence_dir=cfg.evidence.dataset_dir).run(vacuum=False)
            finally:
                store.close()
            log.info("cloud: retention deleted %d rows in %.1f s (%s)", report.deleted, report.seconds,
                     ", ".join(f"{t.name} {t.deleted}" for t in report.tables if t.deleted) or "nothing due")
        except Exception:  # noqa: BLE001 - the next interval tries again; the job goes on
            log.exception("cloud: retention failed")


def _worker(cfg: CloudConfig) -> Any:
    from edgevib.cloud.learning.dataset import EvidenceStore  # noqa: PLC0415
    from edgevib.cloud.learning.retrain import Worker  # noqa: PLC0415
    from edgevib.cloud.store import Store  # noqa: PLC0415

    store = Store(cfg.store_url)
    ev = EvidenceStore(store, cfg.evidence.dataset_dir, max_bytes=cfg.evidence.max_bytes,
                       max_per_gateway_per_min=cfg.evidence.per_gateway_per_min)
    return Worker(cfg.retrain, store, ev, broker_url=cfg.broker_url)


def _retrain(args: argparse.Namespace) -> int:
    """Work off retrain triggers: once (print the results) or until Ctrl-C."""
    from dataclasses import asdict  # noqa: PLC0415

    worker = _worker(_cfg(args))
    if args.once:
        results = worker.run_pending()
        print(json.dumps([asdict(r) for r in results], indent=2, sort_keys=True))
        return 1 if any(r.status == "failed" for r in results) else 0
    stop = threading.Event()
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _base(args: argparse.Namespace) -> int:
    """The retrain worker's fixed dataset: a leak-free time split of recordings."""
    from edgevib.cloud.learning.retrain import save_base  # noqa: PLC0415
    from edgevib.models.classes import CLASSES_10  # noqa: PLC0415
    from edgevib.models.data import load_dir  # noqa: PLC0415
    from edgevib.models.split import time_split  # noqa: PLC0415

    if args.arch == "faulttype":
        return _faulttype_base(args)
    if len(args.data) != 1:
        from edgevib.errors import ConfigError  # noqa: PLC0415

        raise ConfigError("cloud.base", f"{len(args.data)} --data folders", "pass one folder (or use --arch faulttype)")
    classes = tuple(args.classes or CLASSES_10)
    train, holdout = time_split(load_dir(args.data[0], classes), classes=classes, test_frac=args.holdout)
    path = save_base(args.out, train, holdout)
    print(f"{path}: {len(train)} training and {len(holdout)} held-out windows, classes {', '.join(classes)}")
    return 0


def _faulttype_base(args: argparse.Namespace) -> int:
    """Order features of every rig's recordings (+ simulated bearings, as the fleet model is
    trained): the newest ``--holdout`` of each recording's windows held out, one window of gap."""
    from edgevib.cloud.learning.retrain import save_faulttype_base  # noqa: PLC0415
    from edgevib.models import faulttype as ft  # noqa: PLC0415
    from edgevib.models.data import load_dir  # noqa: PLC0415
    from edgevib.models.faulttype_cli import SIM_RECORDINGS  # noqa: PLC0415

    feats = ft.features_of([r for d in args.data for r in load_dir(d)])
    hold, gap = ft.newest_held_out(feats, args.holdout)
    sims = [ft.features_of(ft.simulated(SIM_RECORDINGS if args.sim is None else args.sim, seed=0))] if args.sim != 0 else []
    train = ft.FeatureSet.concat([feats.select(~hold & ~gap), *sims])
    path = save_faulttype_base(args.out, train, feats.select(hold))
    print(f"{path}: {len(train.y)} training and {int(hold.sum())} held-out order-feature windows "
          f"(rigs {', '.join(sorted(set(feats.rig.tolist())))})")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from edgevib.cloud.ingest.collector import run_collector  # noqa: PLC0415

    stop = threading.Event()
    try:
        run_collector(_cfg(args), stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _bridge(args: argparse.Namespace) -> int:
    from edgevib.cloud.ingest.bridge import run_bridge  # noqa: PLC0415

    stop = threading.Event()
    # SIGTERM (Kubernetes, systemd) stops it like Ctrl-C: the pending batch is written and acked.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_bridge(_cfg(args), stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _job(args: argparse.Namespace) -> int:
    from edgevib.cloud.flink.job import main  # noqa: PLC0415

    argv = ["--restore", "latest" if not args.fresh else ""]
    if args.config:
        argv += ["--config", str(args.config)]
    return main(argv)


def _status(args: argparse.Namespace) -> int:
    from edgevib.cloud.store import Store  # noqa: PLC0415

    store = Store(_cfg(args).store_url)
    try:
        out = {"tables": store.summary(), "dead_letters": store.dead_letter_counts(),
               "gateways": {k: {"status": v["status"], "model": v["model_name"], "version": v["model_version"],
                                "sha256": v["model_sha256"]} for k, v in store.gateways().items()},
               "open_incidents": [i["id"] for i in store.incidents() if i["status"] == "open"]}
    finally:
        store.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _maintain(args: argparse.Namespace) -> int:
    """Apply ``[retention]`` to the store once: per table rows deleted and kept (cloud/retention.py)."""
    from edgevib.cloud.retention import Retention, format_report  # noqa: PLC0415
    from edgevib.cloud.store import Store  # noqa: PLC0415

    cfg = _cfg(args)
    store = Store(cfg.store_url)
    try:
        report = Retention(store, cfg.retention, evidence_dir=cfg.evidence.dataset_dir).run(
            vacuum=True if args.vacuum else None)
    finally:
        store.close()
    print(json.dumps(report.as_dict(), indent=2, sort_keys=True) if args.json else format_report(report))
    return 0


def _config(args: argparse.Namespace) -> int:
    print("\n".join(describe(CloudConfig)))
    return 0


def register(subparsers: Any) -> None:
    """Add ``edgevib cloud ...`` to the core CLI."""
    p = subparsers.add_parser("cloud", help="fleet aggregation: MQTT bridge + PyFlink job + alert store",
                              description=__doc__)
    sub = p.add_subparsers(dest="cloud_command", metavar="CLOUD_COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="TOML file (docs/cloud.md); EDGEVIB_* overrides")
    common.add_argument("--broker", default=None, help="broker URL, e.g. mqtt://127.0.0.1:1883")
    common.add_argument("--store", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB")
    r = sub.add_parser("run", parents=[common], help="bridge + job in a local mini-cluster (Ctrl-C stops)")
    r.add_argument("--fresh", action="store_true", help="ignore retained checkpoints")
    r.set_defaults(func=_run)
    br = sub.add_parser("bridge", parents=[common], help="only the MQTT -> spool bridge",
                        description="Run one MQTT -> spool bridge. Several bridges share the gateways' messages "
                                    "through the MQTT 5 shared subscription $share/GROUP/... when they have the same "
                                    "--share-group and each its own --client-id (restart a bridge under its own id: "
                                    "the broker keeps its unacknowledged messages for it). docs/scale.md.")
    br.add_argument("--client-id", default=None,
                    help="MQTT client id of this bridge (bridge.client_id, EDGEVIB_BRIDGE__CLIENT_ID); unique per bridge")
    br.add_argument("--share-group", default=None,
                    help="shared subscription group (bridge.share_group, EDGEVIB_BRIDGE__SHARE_GROUP); '' = no sharing")
    br.set_defaults(func=_bridge)
    sub.add_parser("collect", parents=[common], help="only the evidence collector (windows -> dataset store)"
                   ).set_defaults(func=_collect)
    j = sub.add_parser("job", parents=[common], help="only the Flink job (what `flink run -py` runs)")
    j.add_argument("--fresh", action="store_true", help="ignore retained checkpoints")
    j.set_defaults(func=_job)
    rt = sub.add_parser("retrain", parents=[common], help="the retrain worker: triggers -> gate -> registry -> push")
    rt.add_argument("--once", action="store_true", help="run pending triggers once, print results as JSON")
    rt.set_defaults(func=_retrain)
    b = sub.add_parser("base", help="write the retrain worker's fixed training + held-out set (.npz)")
    b.add_argument("--data", type=Path, required=True, nargs="+",
                   help="directory of recordings (.npz / .mat); --arch faulttype: one per rig, e.g. ../shared/cwru "
                        "../shared/bearings")
    b.add_argument("--arch", choices=("windows", "faulttype"), default="windows",
                   help="windows: for retrain.arch nsae-lcn/cnn; faulttype: order features for retrain.arch faulttype")
    b.add_argument("--sim", type=int, default=None, help="faulttype: simulated recordings in the replay set "
                                                          "(default: as the fleet model; 0: none)")
    b.add_argument("--classes", nargs="+", help="classes to keep (default: the 10 CWRU classes)")
    b.add_argument("--holdout", type=float, default=0.3, help="newest share of each recording held out")
    b.add_argument("--out", type=Path, required=True)
    b.set_defaults(func=_base)
    sub.add_parser("status", parents=[common], help="store summary as JSON").set_defaults(func=_status)
    m = sub.add_parser("maintain", parents=[common], help="apply [retention] to the store once (batched deletes)")
    m.add_argument("--vacuum", action="store_true",
                   help="SQLite: VACUUM after the deletes (default: only when retention.vacuum and a quarter of the "
                        "file is free); PostgreSQL: VACUUM (ANALYZE) the tables that lost rows")
    m.add_argument("--json", action="store_true", help="print the report as JSON")
    m.set_defaults(func=_maintain)
    sub.add_parser("config", help="list settings and their EDGEVIB_ variables").set_defaults(func=_config)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
