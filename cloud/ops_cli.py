"""``edgevib alerts [ack ID | label ID CLASS]`` and ``edgevib fleet``: the alert store from a terminal.

Exit codes (as every edgevib command): 0 ok, 1 not found or failed, 2 bad usage, 4 store unreachable
(retryable), 130 Ctrl-C.
``--json`` prints one JSON document (JSON lines with ``--follow``) for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgevib.cloud.errors import CloudError
from edgevib.cloud.ops import (
    AlertFilter,
    NotFound,
    StoreUnreachable,
    ack,
    alerts,
    alerts_since,
    apply_label,
    cursor_now,
    cursor_of,
    fleet,
    open_store,
)
from edgevib.cloud.store import Store

from edgevib.errors import ConfigError, EdgevibError, MissingExtraError

ALERT_TABLE = (("time", 19), ("id", 20), ("asset", 24), ("kind", 7), ("state", 7), ("class", 8), ("sev", 6),
               ("p", 5), ("ack", 10))
FLEET_TABLE = (("gateway", 22), ("status", 8), ("last heartbeat", 19), ("age", 7), ("outbox", 7), ("drops", 6),
               ("model", 28), ("last push", 24))


def _time(ms: Any) -> str:
    return "-" if ms is None else datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt(cols: tuple[tuple[str, int], ...], cells: list[str]) -> str:
    return "  ".join(c[:w].ljust(w) for c, (_, w) in zip(cells, cols, strict=True)).rstrip()


def _alert_cells(a: dict[str, Any]) -> list[str]:
    p = a.get("probability")
    return [_time(a.get("ev_ms")), str(a["id"]), str(a.get("asset") or ""), str(a.get("akind") or ""),
            str(a.get("state") or ""), str(a.get("label") or a.get("cls") or ""), str(a.get("severity") or ""),
            f"{p:.2f}" if isinstance(p, float) else "-", str(a.get("acked_by") or "")]


def _store_url(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    from edgevib.cloud.config import load_config  # noqa: PLC0415

    return load_config(args.config).store_url


def _guard(func: Any) -> Any:
    """Map the store's failures to this command's exit codes, with the message on stderr."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except StoreUnreachable as exc:
            print(f"edgevib: {exc}", file=sys.stderr)
            return 4
        except (NotFound, CloudError) as exc:
            print(f"edgevib: {exc}", file=sys.stderr)
            return 1
        except EdgevibError as exc:
            if exc.retryable:
                print(f"edgevib: {exc}", file=sys.stderr)
                return 4
            raise
        except KeyboardInterrupt:
            return 130
    return wrapped


def _list(args: argparse.Namespace) -> int:
    flt = AlertFilter(site=args.site, asset=args.asset, cls=args.cls)
    store = open_store(_store_url(args))
    try:
        rows = alerts(store, flt, limit=args.limit)
        if args.json and not args.follow:
            print(json.dumps(rows, sort_keys=True))
            return 0
        if not args.json:
            print(_fmt(ALERT_TABLE, [c for c, _ in ALERT_TABLE]))
        for a in rows:
            print(json.dumps(a, sort_keys=True) if args.json else _fmt(ALERT_TABLE, _alert_cells(a)), flush=True)
        if args.follow:
            _follow(store, flt, cursor_of(rows[-1]) if rows else cursor_now(store), args.json, args.interval)
    finally:
        store.close()
    return 0


def _follow(store: Store, flt: AlertFilter, cursor: tuple[int, str], as_json: bool, interval: float) -> None:
    # Cursor on (stored_ms, id): the store keeps an alert's first store time across replays,
    # so a replayed alert is not printed twice.
    cursor = max(cursor, cursor_now(store)) if cursor == (0, "") else cursor
    while True:
        for a in alerts_since(store, cursor, flt):
            cursor = cursor_of(a)
            print(json.dumps(a, sort_keys=True) if as_json else _fmt(ALERT_TABLE, _alert_cells(a)), flush=True)
        time.sleep(interval)


def _ack(args: argparse.Namespace) -> int:
    store = open_store(_store_url(args))
    try:
        row = ack(store, args.id, by=args.by, now_ms=int(time.time() * 1000), note=args.note)
    finally:
        store.close()
    print(json.dumps(row, sort_keys=True) if args.json else f"acknowledged {row['alert_id']} by {row['acked_by']}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from edgevib.cloud.config import load_config  # noqa: PLC0415

    evidence_dir = args.evidence_dir or load_config(args.config).evidence.dataset_dir
    store = open_store(_store_url(args))
    try:
        out = apply_label(store, args.id, args.cls, by=args.by, broker_url=args.broker, evidence_dir=evidence_dir)
    finally:
        store.close()
    print(json.dumps(out, sort_keys=True, default=str) if args.json else f"labelled {out['alert_id']} as {args.cls}")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    store = open_store(_store_url(args))
    try:
        rows = fleet(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    now = time.time() * 1000
    print(_fmt(FLEET_TABLE, [c for c, _ in FLEET_TABLE]))
    for g in rows:
        ms = g.get("model_status") or {}
        age = f"{(now - g['last_hb_ms']) / 1000:.0f}s" if g.get("last_hb_ms") else "-"
        push = f"{ms.get('version')} {ms.get('result')}" if ms else "-"
        print(_fmt(FLEET_TABLE, [f"{g['site']}/{g['gateway']}", str(g.get("status") or "?"), _time(g.get("last_hb_ms")),
                                 age, str(g.get("outbox_pending") if g.get("outbox_pending") is not None else "-"),
                                 str(g.get("drops_total") if g.get("drops_total") is not None else "-"),
                                 f"{g.get('model_name') or '-'} {g.get('model_version') or ''}", push]))
    online = sum(1 for g in rows if g.get("status") == "online")
    print(f"{len(rows)} gateways, {online} online")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from edgevib.cloud.config import load_config  # noqa: PLC0415

    try:
        from edgevib.cloud.web.dashboard import create_app, new_token, serve  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "edgevib":
            raise
        raise MissingExtraError(exc.name or "starlette", "cloud", "edgevib dashboard") from exc
    cfg = load_config(args.config)
    dc = cfg.dashboard
    host, port = args.host or dc.host, dc.port if args.port is None else args.port
    token = args.token or dc.token or new_token()
    if len(token) < 16:
        raise ConfigError("edgevib dashboard", "--token shorter than 16 characters", "use a long random token")
    store_url = args.store or cfg.store_url
    if store_url.startswith("sqlite:///") and not Path(store_url[len("sqlite:///"):]).is_file():
        print(f"edgevib dashboard: no store at {store_url} yet: it stays empty until the cloud job "
              "(edgevib cloud run) writes there; check --store if that is not what you meant", file=sys.stderr)
    app = create_app(store_url, token, broker_url=args.broker, evidence_dir=args.evidence_dir or cfg.evidence.dataset_dir,
                     registry_dir=args.registry, max_sse_clients=dc.max_sse_clients, max_page=dc.max_page)
    if port == 0:
        from edgevib.cloud.web.dashboard import free_port  # noqa: PLC0415

        port = free_port(host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"edgevib dashboard: http://{shown}:{port}/login?token={token}", flush=True)
    print(f"  store {store_url}" + (f", broker {args.broker}" if args.broker else ", no broker (no live metrics, no push)"),
          flush=True)
    try:
        serve(app, host, port).run()
    finally:
        app.state.dashboard.close()
    return 0


def _common(default: Any) -> argparse.ArgumentParser:
    # Subcommands get SUPPRESS defaults: argparse would let their None overwrite a value
    # given before the subcommand (``edgevib alerts --store X ack ID``).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=default, help="sqlite:///PATH or postgresql://...; default: store_url of --config")
    common.add_argument("--config", type=Path, default=default, help="cloud TOML (docs/cloud.md); EDGEVIB_* overrides")
    common.add_argument("--json", action="store_true", default=default if default is not None else False,
                        help="JSON for scripts (JSON lines with --follow)")
    return common


def register(sub: Any) -> None:
    """Add ``edgevib alerts`` and ``edgevib fleet``."""
    common, common_sub = _common(None), _common(argparse.SUPPRESS)
    p = sub.add_parser("alerts", parents=[common], help="list, follow, acknowledge and label alerts in the store",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts until Ctrl-C")
    p.add_argument("--site", default=None)
    p.add_argument("--asset", default=None, help="site/gateway/sensor unless the alert names its asset")
    p.add_argument("--class", dest="cls", default=None, help="a class or its prefix: IR, IR007, OR014@6")
    p.add_argument("--limit", type=int, default=20, help="newest N alerts (default 20)")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=_guard(_list))
    asub = p.add_subparsers(dest="alerts_command", metavar="{ack,label}")
    a = asub.add_parser("ack", parents=[common_sub], help="acknowledge an alert (id or a unique 6+ character prefix)")
    a.add_argument("id")
    a.add_argument("--by", default=getpass.getuser(), help="who (default: your user name)")
    a.add_argument("--note", default="")
    a.set_defaults(func=_guard(_ack))
    lb = asub.add_parser("label", parents=[common_sub], help="label an alert with the class it really was")
    lb.add_argument("id")
    lb.add_argument("cls", metavar="CLASS", help="e.g. IR007, OR021@6, normal")
    lb.add_argument("--by", default=getpass.getuser())
    lb.add_argument("--broker", default=None, help="also publish the label on this MQTT broker (default: store only)")
    lb.add_argument("--evidence-dir", type=Path, default=None, help="dataset directory (default: [evidence] dataset_dir)")
    lb.set_defaults(func=_guard(_label))
    f = sub.add_parser("fleet", parents=[common], help="gateways: online/offline, last heartbeat, outbox, model")
    f.set_defaults(func=_guard(_fleet))
    d = sub.add_parser("dashboard", help="web dashboard: live alerts, fleet, sensor spectra, model rollouts",
                       description="Serves the dashboard (docs/dashboard.md). Prints the URL with the login token.")
    d.add_argument("--host", default=None, help="bind address (default 127.0.0.1; [dashboard] host)")
    d.add_argument("--port", type=int, default=None, help="TCP port (default 8765; 0 = any free one)")
    d.add_argument("--token", default=None, help="access token (default: [dashboard] token, "
                   "EDGEVIB_DASHBOARD__TOKEN, else a fresh one printed at start)")
    d.add_argument("--store", default=None, help="sqlite:///PATH or postgresql://... (default: store_url of --config)")
    d.add_argument("--config", type=Path, default=None, help="cloud TOML (docs/cloud.md)")
    d.add_argument("--broker", default=None, help="MQTT URL: live heartbeat metrics, label events, model push")
    d.add_argument("--evidence-dir", type=Path, default=None, help="evidence windows (default: [evidence] dataset_dir)")
    d.add_argument("--registry", type=Path, default=None, help="model registry directory")
    d.set_defaults(func=_dashboard)
