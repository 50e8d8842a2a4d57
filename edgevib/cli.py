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
from collections.abc import Sequence

from edgevib import __version__
from edgevib.errors import ConfigError, EdgevibError, MissingExtraError, RetryableError

log = logging.getLogger("edgevib")

# module path -> (function registering its subcommands)
_PARTS = ("edgevib.models.cli", "edgevib.edge.cli", "edgevib.cloud.cli", "edgevib.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgevib",
        description="Edge stream processing for machine-health monitoring.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgevib {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in _PARTS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edgevib"):
                continue  # that part is not built yet
            raise
        mod.register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
