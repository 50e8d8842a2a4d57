"""Request bounds of the dashboard (issue 19): query strings checked before any query runs,
page sizes capped, live streams (SSE) counted.

:class:`RequestGuard` is ASGI middleware in front of every route. A query string that is too
long, has too many parameters, or a parameter outside its rule gets 400 naming the
parameter, the value and what is allowed; no store query runs. The rules go by parameter
name, so routes added later are covered too:

* ``limit``: an integer 1..``max_page`` (``dashboard.max_page``, default 2000);
  ``offset``: an integer 0..10,000,000;
* ``*_ms`` (``after_ms``, ``since_ms``, ``until_ms``, ...): an integer 0..2^53;
* ``site``, ``gateway``, ``sensor``: the protocol's names (``[A-Za-z0-9_.:-]``, at most
  64 characters, edgevib.protocol), so quotes, spaces and SQL text are refused;
* ``cls``: ``[A-Za-z0-9_.-]``, at most 64; anything else (``asset``, ``after_id``, ...):
  at most 200 printable characters. The store binds every value as a parameter anyway.

:class:`StreamSlots` counts ``/api/alerts/stream`` connections; beyond ``max_sse_clients``
(default 32) the next one gets 503 with a ``Retry-After``.

>>> check_params([("limit", "50"), ("site", "plant-1")], max_page=2000) is None
True
>>> check_params([("limit", "99999")], max_page=2000)
'limit=99999: use an integer from 1 to 2000 (dashboard.max_page)'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from edgevib.protocol import NAME_MAX

MAX_QUERY_BYTES = 2048
MAX_PARAMS = 32
MAX_VALUE = 200
MAX_OFFSET = 10_000_000
MAX_MS = 2**53

_NAME = re.compile(rf"[A-Za-z0-9_.:-]{{1,{NAME_MAX}}}")
_CLS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INT = re.compile(r"[0-9]{1,16}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")


def _show(v: str) -> str:
    return repr(v if len(v) <= 40 else v[:40] + "...")


def _int(name: str, v: str, lo: int, hi: int, what: str = "") -> str | None:
    if not _INT.fullmatch(v) or not lo <= int(v) <= hi:
        return f"{name}={_show(v) if not _INT.fullmatch(v) else v}: use an integer from {lo} to {hi}{what}"
    return None


def check_params(params: Sequence[tuple[str, str]], *, max_page: int) -> str | None:
    """The reason a query string is refused, or None when every parameter keeps to its rule."""
    if len(params) > MAX_PARAMS:
        return f"{len(params)} query parameters: send at most {MAX_PARAMS}"
    for name, v in params:
        if len(name) > 64 or not _PRINTABLE.fullmatch(name):
            return f"parameter name {_show(name)}: use a short name"
        if name == "limit":
            err = _int(name, v, 1, max_page, " (dashboard.max_page)")
        elif name == "offset":
            err = _int(name, v, 0, MAX_OFFSET)
        elif name.endswith("_ms"):
            err = _int(name, v, 0, MAX_MS, " (epoch milliseconds)")
        elif name in ("site", "gateway", "sensor"):
            err = None if (v == "" or _NAME.fullmatch(v)) else (
                f"{name}={_show(v)}: use a name of at most {NAME_MAX} letters, digits and _ . : -")
        elif name == "cls":
            err = None if (v == "" or _CLS.fullmatch(v)) else f"cls={_show(v)}: use a class name such as IR007"
        elif len(v) > MAX_VALUE or not _PRINTABLE.fullmatch(v):
            err = f"{name}={_show(v)}: use at most {MAX_VALUE} printable characters"
        else:
            err = None
        if err:
            return err
    return None


class RequestGuard:
    """ASGI middleware: 400 for hostile query strings, before any route runs."""

    def __init__(self, app: ASGIApp, *, max_page: int = 2000) -> None:
        self.app, self.max_page = app, max_page
        self.refused_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            err: str | None = f"query string of {len(raw)} bytes: send at most {MAX_QUERY_BYTES}"
        else:
            err = check_params(Request(scope).query_params.multi_items(), max_page=self.max_page)
        if err is not None:
            self.refused_requests += 1
            await JSONResponse({"error": err}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class StreamSlots:
    """Live streams open at once: :meth:`acquire` before a stream starts, :meth:`release` when its
    generator ends (the server closes it when the client goes). One event loop: no lock needed."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams, self.open, self.refused = max_streams, 0, 0

    def acquire(self) -> JSONResponse | None:
        """None when a slot is taken (call :meth:`release` later), else the 503 to send."""
        if self.open >= self.max_streams:
            self.refused += 1
            return JSONResponse({"error": f"{self.open} live alert streams are open, the most "
                                          f"dashboard.max_sse_clients={self.max_streams} allows; close a "
                                          "dashboard tab or raise the setting"},
                                status_code=503, headers={"Retry-After": "10"})
        self.open += 1
        return None

    def release(self) -> None:
        self.open -= 1
