"""Typed, frozen configuration: a TOML file, overridden by ``EDGEVIB_...`` variables.

A config is a frozen dataclass whose ``__post_init__`` validates it. :func:`load`
builds one from a TOML file, then applies environment overrides named after the
field path: top-level ``broker_url`` is ``EDGEVIB_BROKER_URL``; a field of a nested
section joins with a double underscore, ``alert.k`` is ``EDGEVIB_ALERT__K``.

>>> from dataclasses import field, make_dataclass
>>> Alert = make_dataclass("Alert", [("k", int, 3)], frozen=True)
>>> Cfg = make_dataclass("Cfg", [("broker_url", str, "mqtt://127.0.0.1:1883"),
...                              ("alert", Alert, field(default_factory=Alert))], frozen=True)
>>> load(Cfg, None, env={"EDGEVIB_ALERT__K": "5"}).alert.k
5
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edgevib.errors import ConfigError

T = TypeVar("T")
ENV_PREFIX = "EDGEVIB_"


def env_name(path: tuple[str, ...], prefix: str = ENV_PREFIX) -> str:
    """``("alert", "k")`` -> ``EDGEVIB_ALERT__K``."""
    return prefix + "__".join(p.upper() for p in path)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML or environment value to the annotated type, or raise ConfigError."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value == ""):
        if optional:
            return None
        raise ConfigError(where, "missing value", "set it in the TOML file or the environment")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"{value!r} is not a table", f"write [{where}] as a TOML table")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if tp is Path:
            return Path(str(value)).expanduser()
        if origin is tuple:
            args = typing.get_args(tp)
            items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
            elem = args[0] if args else str
            return tuple(_coerce(v, elem, where) for v in items)
        if origin is dict or tp is dict:
            if not isinstance(value, Mapping):
                raise ValueError(value)
            kt, vt = typing.get_args(tp) or (str, Any)
            return {str(k): (_coerce(v, vt, f"{where}.{k}") if vt is not Any else v) for k, v in value.items()}
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise ConfigError(where, f"{value!r} is not allowed", f"use one of {', '.join(map(repr, choices))}")
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, f"{value!r} is not a valid {getattr(tp, '__name__', tp)}", "correct the value") from exc
    return value


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            where or "config",
            f"unknown key {unknown[0]!r}",
            f"use one of {', '.join(sorted(fields))}",
        )
    kwargs = {name: _coerce(v, hints[name], f"{where}.{name}" if where else name) for name, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(where or "config", str(exc), "correct the configuration") from exc


def _env_overrides(cls: type, env: Mapping[str, str], prefix: str, path: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        p = (*path, f.name)
        if _is_dataclass_type(tp):
            sub = _env_overrides(tp, env, prefix, p)
            if sub:
                out[f.name] = sub
        elif typing.get_origin(tp) is not dict:
            name = env_name(p, prefix)
            if name in env:
                out[f.name] = env[name]
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, with errors that name the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("config", f"file {str(path)!r} not found", "pass an existing TOML file with --config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"file {str(path)!r} is not valid TOML ({exc})", "fix the TOML syntax") from exc


def load(
    cls: type[T],
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    prefix: str = ENV_PREFIX,
) -> T:
    """Build ``cls`` from defaults < TOML file < environment < ``overrides`` (e.g. CLI flags)."""
    data: dict[str, Any] = read_toml(Path(path)) if path is not None else {}
    data = _merge(data, _env_overrides(cls, os.environ if env is None else env, prefix))
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return _build(cls, data, "")


def describe(cls: type, prefix: str = ENV_PREFIX, path: tuple[str, ...] = ()) -> list[str]:
    """One line per setting: TOML key, environment variable, type and default (for ``--help``)."""
    lines: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        p = (*path, f.name)
        if _is_dataclass_type(tp):
            lines.extend(describe(tp, prefix, p))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        tname = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        if typing.get_origin(tp) is dict:
            lines.append(f"  [{'.'.join(p)}.<name>] table (TOML only)")
        else:
            lines.append(f"  {'.'.join(p):<28} {env_name(p, prefix):<36} {tname:<8} default {default}")
    return lines
