"""``edgevib models keygen|list|add|push|rollback``: sign models and roll them out to gateways.

Settings: flags, else ``EDGEVIB_REGISTRY_ROOT|KEY|BROKER_URL|STORE_URL|TIMEOUT_S``, else the
``--config`` TOML (keys ``root``, ``key``, ``broker_url``, ``store_url``, ``timeout_s``).
Exit codes: 0 ok, 1 rollout halted or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgevib.models.registry import Registry, RegistryConfig, RegistryError, keygen

from edgevib import config as core_config
from edgevib.errors import ConfigError

ENV_PREFIX = "EDGEVIB_REGISTRY_"


def _cfg(args: argparse.Namespace) -> RegistryConfig:
    return core_config.load(RegistryConfig, args.config, prefix=ENV_PREFIX, overrides={
        "root": getattr(args, "registry", None), "key": getattr(args, "key", None),
        "broker_url": getattr(args, "broker", None), "store_url": getattr(args, "store", None),
        "timeout_s": getattr(args, "timeout", None)})


def _targets(to: list[str], cfg: RegistryConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for t in to:
        if t == "fleet":
            if not cfg.store_url:
                raise ConfigError("models.push", "--to fleet without a store", "pass --store sqlite:///PATH")
            from edgevib.cloud.store import Store

            store = Store(cfg.store_url)
            out += [(g["site"], g["gateway"]) for g in store.gateways().values()]
            store.close()
            continue
        site, sep, gw = t.partition("/")
        if not sep or not site or not gw or "/" in gw:
            raise ConfigError("models.push", f"--to {t!r}", "write --to SITE/GATEWAY (repeatable) or --to fleet")
        out.append((site, gw))
    return list(dict.fromkeys(out))


def _canary(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        v = float(text.rstrip("%"))
    except ValueError:
        v = -1.0
    if not 0 <= v <= 100:
        raise ConfigError("models.push", f"--canary {text!r}", "give a percentage 0..100, e.g. --canary 10%")
    return v


def _print_rollout(res: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(f"{'GATEWAY':<28} {'STAGE':<8} {'RESULT':<12} REASON")
        for gw, g in res.gateways.items():
            extra = f" (rollback: {g['rollback']})" if g.get("rollback") else ""
            print(f"{gw:<28} {g['stage']:<8} {g['result']:<12} {g['reason'] or ''}{extra}")
        what = f"{res.name} v{res.version}" if res.name else "rollback"
        print(f"rollout {res.id} ({what}): {res.status}")
    return 0 if res.ok else 1


def cmd_keygen(args: argparse.Namespace) -> int:
    priv, pub = keygen(args.out)
    print(f"wrote {priv} (private, mode 0600: keep it on the registry host)")
    print(f"wrote {pub} (public: set update.public_key on every gateway)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    entries = Registry(_cfg(args).root).list()
    if args.json:
        print(json.dumps([e.manifest.to_dict() for e in entries], indent=2))
        return 0
    print(f"{'NAME':<20} {'VERSION':<18} {'SHA256':<13} {'BYTES':>8} {'WINDOW':>6} CLASSES")
    for e in entries:
        m = e.manifest
        print(f"{m.name:<20} {m.version:<18} {m.sha256[:12]:<13} {m.size:>8} {m.window:>6} {len(m.classes)}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    metrics = json.loads(args.metrics) if args.metrics else None
    m = Registry(cfg.root, private_key=cfg.key or None).add(args.model, version=args.version, name=args.name,
                                                            metrics=metrics, card=args.card)
    print(json.dumps(m.to_dict(), indent=2) if args.json else
          f"added {m.name} v{m.version} (sha256 {m.sha256[:12]}, {m.size} bytes, key {m.key_id}) to {cfg.root}")
    return 0


def _store(cfg: RegistryConfig) -> Any:
    if not cfg.store_url:
        return None
    from edgevib.cloud.store import Store

    return Store(cfg.store_url)


def cmd_push(args: argparse.Namespace) -> int:
    from edgevib.cloud.rollout import push

    cfg = _cfg(args)
    name, _, version = args.model.partition(":")
    try:
        Registry(cfg.root).get(name, version or None)
    except RegistryError as exc:  # naming a model that is not there is a usage error (exit 2)
        raise ConfigError(exc.component, exc.problem, exc.fix) from exc
    res = push(Registry(cfg.root), name, version or None, _targets(args.to, cfg), broker_url=cfg.broker_url,
               canary_pct=_canary(args.canary), timeout_s=cfg.timeout_s, store=_store(cfg),
               canary_soak_s=args.soak)
    return _print_rollout(res, args.json)


def cmd_rollback(args: argparse.Namespace) -> int:
    from edgevib.cloud.rollout import rollback

    cfg = _cfg(args)
    res = rollback(_targets(args.to, cfg), broker_url=cfg.broker_url, timeout_s=cfg.timeout_s,
                   store=_store(cfg), reason=args.reason)
    return _print_rollout(res, args.json)


def add_parsers(sub: Any) -> None:
    """Add the registry subcommands to ``edgevib models``."""
    def common(p: argparse.ArgumentParser, *, net: bool = False) -> None:
        p.add_argument("--config", type=Path, help="TOML with root, key, broker_url, store_url, timeout_s")
        p.add_argument("--registry", help=f"registry directory (env {ENV_PREFIX}ROOT, default model-registry)")
        p.add_argument("--json", action="store_true", help="print JSON")
        if net:
            p.add_argument("--to", action="append", required=True, metavar="SITE/GATEWAY|fleet",
                           help="repeatable; fleet = every gateway in the store")
            p.add_argument("--broker", help=f"mqtt://HOST:PORT (env {ENV_PREFIX}BROKER_URL)")
            p.add_argument("--store", help=f"sqlite:///PATH for results and --to fleet (env {ENV_PREFIX}STORE_URL)")
            p.add_argument("--timeout", type=float, help="seconds to wait for each stage's verdicts (default 60)")

    k = sub.add_parser("keygen", help="make the Ed25519 key pair that signs models")
    k.add_argument("--out", type=Path, required=True, help="directory for signing_key.pem and .pub.pem")
    k.set_defaults(func=cmd_keygen)
    ls = sub.add_parser("list", help="list the registry's models")
    common(ls)
    ls.set_defaults(func=cmd_list)
    a = sub.add_parser("add", help="check, sign and store an ONNX model in the registry")
    a.add_argument("model", type=Path, help="MODEL.onnx")
    common(a)
    a.add_argument("--key", help=f"private signing key PEM (env {ENV_PREFIX}KEY)")
    a.add_argument("--version", help="version (default: the model's metadata version)")
    a.add_argument("--name", help="name (default: the file name without .onnx)")
    a.add_argument("--metrics", help="JSON object merged into the manifest's metrics")
    a.add_argument("--card", help="model card (file or text) stored as card.md")
    a.set_defaults(func=cmd_add)
    p = sub.add_parser("push", help="roll a model out: canaries first, halt on any failure")
    p.add_argument("model", metavar="NAME[:VERSION]", help="registry model (newest version if none given)")
    common(p, net=True)
    p.add_argument("--canary", metavar="N%", help="first send to N%% of the targets (at least one) and wait")
    p.add_argument("--soak", type=float, default=0.0, metavar="S",
                   help="after the canaries installed, wait S seconds: a probation rollback there halts too")
    p.set_defaults(func=cmd_push)
    r = sub.add_parser("rollback", help="tell gateways to go back to their previous model")
    common(r, net=True)
    r.add_argument("--reason", default="requested", help="reason reported in model_status")
    r.set_defaults(func=cmd_rollback)
