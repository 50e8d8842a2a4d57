"""The ``edgevib`` command line.

Each part registers its own subcommands (``edgevib.models.cli``, ``edgevib.edge.cli``,
``edgevib.cloud.cli``) so that a gateway with only the ``edge`` extra still gets a
working ``edgevib agent``; a subcommand whose extra is missing prints the
``pip install`` line that adds it.

Exit codes: 0 ok, 1 the work failed (e.g. a check did not pass), 2 bad usage or
configuration, 3 a missing extra, 4 a retryable failure (broker away), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from edgevib import __version__
from edgevib.errors import ConfigError, EdgevibError, MissingExtraError, RetryableError

log = logging.getLogger("edgevib")

# module registering subcommands -> (extra it needs, the commands it adds)
_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "edgevib.models.cli": ("train", ("models",)),
    "edgevib.edge.cli": ("edge", ("agent", "stream")),
    "edgevib.cloud.cli": ("cloud", ("cloud",)),
    "edgevib.cloud.ops_cli": ("cloud", ("alerts", "fleet", "dashboard")),  # light: imports stdlib + store
    "edgevib.tools.deploy": ("edge", ("deploy",)),  # a developer-machine tool (edgevib/tools/)
    "edgevib.demo": ("dev", ("demo",)),
}


def _missing_extra(module: str, extra: str, name: str) -> Callable[[argparse.Namespace], int]:
    def func(_args: argparse.Namespace) -> int:
        raise MissingExtraError(module, extra, f"edgevib {name}")

    return func


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All commands; with ``command``, only the part that adds it is imported (see :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog="edgevib",
        description="Edge stream processing for machine-health monitoring.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgevib {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name, (extra, names) in _PARTS.items():
        if command is not None and command not in names:
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == "edgevib":
                raise  # our own module is broken: never hide that
            # A dependency of this part is not installed: keep its commands, explain the fix.
            for name in names:
                stub = sub.add_parser(name, help=f"(needs: pip install 'edgevib[{extra}]')")
                stub.set_defaults(func=_missing_extra(exc.name, extra, name))
            continue
        mod.register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the part that runs: `edgevib agent` would otherwise carry the training tools'
    # scipy.signal/scipy.stats (~55 MB of RSS on a gateway). Top-level options take no values,
    # so the first word that is not an option is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    known = {n for _extra, names in _PARTS.values() for n in names}
    parser = build_parser(command if command in known else None)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except MissingExtraError as exc:
        print(f"edgevib: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"edgevib: {exc}", file=sys.stderr)
        return 2
    except RetryableError as exc:
        print(f"edgevib: {exc}", file=sys.stderr)
        return 4
    except EdgevibError as exc:
        print(f"edgevib: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
