"""``edgevib dashboard``: alerts (live), fleet, sensor spectra and model rollouts in a browser.

A Starlette app over the alert store (SQLite or PostgreSQL), served by uvicorn. Every
route needs the token: ``Authorization: Bearer <token>``, or the cookie that
``/login?token=<token>`` sets (EventSource cannot send headers). The page is one HTML
file with plain JS (``cloud/web/static``); the API under ``/api`` is what it calls.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import uvicorn
from edgevib.cloud import ops
from edgevib.cloud.errors import CloudError
from edgevib.cloud.store import Store
from edgevib.cloud.web import alert_view
from edgevib.cloud.web.guard import RequestGuard, StreamSlots
from edgevib.cloud.web.models_view import ModelsView
from edgevib.cloud.web.plant import asset_history, plant_overview
from edgevib.cloud.web.sensor_data import sensor_payload, sensors, waterfall
from edgevib.models.registry import RegistryError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from edgevib.cloud.web.heartbeats import HeartbeatWatch

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
COOKIE = "edgevib_dashboard"
T = TypeVar("T")


def new_token() -> str:
    return secrets.token_urlsafe(24)


class TokenGate:
    """ASGI middleware: 401 unless the bearer header or the cookie holds the token (constant-time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token.encode()

    def ok(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(str(candidate).encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        req = Request(scope)
        auth = req.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if scope["path"] == "/login":
            resp: Response
            if self.ok(req.query_params.get("token")):
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(COOKIE, req.query_params["token"], httponly=True, samesite="strict")
            else:
                resp = PlainTextResponse("bad token\n", status_code=401)
            await resp(scope, receive, send)
        elif self.ok(bearer) or self.ok(req.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
        else:
            await PlainTextResponse("401: open /login?token=<token> (printed by edgevib dashboard) or send "
                                    "'Authorization: Bearer <token>'\n", status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


class Dashboard:
    """The app's state: one store connection (behind a lock), optional broker and heartbeat watch."""

    def __init__(self, store_url: str, *, broker_url: str | None = None, evidence_dir: Path | None = None,
                 registry_dir: Path | None = None, poll_s: float = 0.5) -> None:
        self.store_url, self.broker_url, self.evidence_dir, self.poll_s = store_url, broker_url, evidence_dir, poll_s
        self.max_page = 2000
        self.streams = StreamSlots(32)  # live alert streams open at once
        self.store = Store(store_url)
        self.lock = threading.Lock()
        self.models = ModelsView(store_url, broker_url, registry_dir)
        self.beats: HeartbeatWatch | None = None
        if broker_url:
            from edgevib.cloud.web.heartbeats import HeartbeatWatch  # noqa: PLC0415 - paho only with a broker

            self.beats = HeartbeatWatch(broker_url)

    def db(self, fn: Callable[[Store], T]) -> T:
        with self.lock:
            return fn(self.store)

    def close(self) -> None:
        if self.beats is not None:
            self.beats.close()
        self.store.close()


def _filter(req: Request) -> ops.AlertFilter:
    q = req.query_params
    return ops.AlertFilter(site=q.get("site") or None, asset=q.get("asset") or None, cls=q.get("cls") or None)


def _err(exc: Exception, status: int) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status)


def routes(d: Dashboard) -> list[Route | Mount]:
    async def index(_req: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def list_alerts(req: Request) -> Response:
        flt, limit = _filter(req), min(int(req.query_params.get("limit", "200")), d.max_page)
        cursor = await run_in_threadpool(d.db, ops.cursor_now)  # before the query: SSE resumes from here
        rows = await run_in_threadpool(d.db, lambda s: ops.alerts(s, flt, limit=limit))
        return JSONResponse({"alerts": rows, "cursor": list(cursor)})

    async def stream(req: Request) -> Response:
        flt, q = _filter(req), req.query_params
        cursor = ((int(q["after_ms"]), q.get("after_id", "")) if "after_ms" in q
                  else await run_in_threadpool(d.db, ops.cursor_now))
        refused = d.streams.acquire()  # dashboard.max_sse_clients: the next stream gets 503
        if refused is not None:
            return refused

        async def events() -> AsyncIterator[str]:
            nonlocal cursor
            try:
                yield "retry: 2000\n: connected\n\n"
                quiet = 0.0
                while not await req.is_disconnected():
                    rows = await run_in_threadpool(d.db, lambda s, c=cursor: ops.alerts_since(s, c, flt))
                    for r in rows:
                        cursor = ops.cursor_of(r)
                        yield f"event: alert\ndata: {json.dumps(r)}\n\n"
                    quiet = 0.0 if rows else quiet + d.poll_s
                    if quiet >= 15:  # keep proxies from closing an idle stream
                        quiet = 0.0
                        yield ": keepalive\n\n"
                    await anyio.sleep(d.poll_s)
            finally:
                d.streams.release()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def ack(req: Request) -> Response:
        body = await _json(req)
        try:
            row = await run_in_threadpool(d.db, lambda s: ops.ack(s, req.path_params["id"], by=str(body.get("by") or "dashboard"),
                                                                   now_ms=int(time.time() * 1000), note=str(body.get("note") or "")))
        except ops.NotFound as exc:
            return _err(exc, 404)
        return JSONResponse(row)

    async def label(req: Request) -> Response:
        body = await _json(req)
        if not isinstance(body.get("cls"), str) or not body["cls"]:
            return JSONResponse({"error": "send {\"cls\": \"IR007\"}"}, status_code=400)
        try:
            out = await run_in_threadpool(d.db, lambda s: ops.apply_label(
                s, req.path_params["id"], body["cls"], by=str(body.get("by") or "dashboard"),
                broker_url=d.broker_url, evidence_dir=d.evidence_dir))
        except ops.NotFound as exc:
            return _err(exc, 404)
        except CloudError as exc:
            return _err(exc, 409)
        return JSONResponse(json.loads(json.dumps(out, default=str)))

    async def fleet(_req: Request) -> Response:
        rows = await run_in_threadpool(d.db, ops.fleet)
        live = d.beats.snapshot() if d.beats is not None else {}
        for g in rows:
            g["live"] = live.get(f"{g['site']}/{g['gateway']}")
        return JSONResponse({"gateways": rows, "live_source": "mqtt heartbeats" if d.beats else None,
                             "live_rejected": d.beats.rejected_counts() if d.beats is not None else {},
                             "now_ms": int(time.time() * 1000)})

    async def sensor_list(_req: Request) -> Response:
        return JSONResponse({"sensors": await run_in_threadpool(d.db, sensors)})

    async def sensor(req: Request) -> Response:
        q = req.query_params
        try:
            out = await run_in_threadpool(d.db, lambda s: sensor_payload(
                s, q["site"], q["gateway"], q["sensor"], geometry=q.get("geometry") or "cwru-de-6205",
                evidence_dir=d.evidence_dir))
        except KeyError as exc:
            return JSONResponse({"error": f"missing query parameter {exc}"}, status_code=400)
        except CloudError as exc:
            return _err(exc, 400)
        return JSONResponse(out)

    async def alert_page(req: Request) -> Response:
        q = req.query_params
        try:
            out = await run_in_threadpool(d.db, lambda s: alert_view.alert_detail(
                s, req.path_params["id"], geometry=q.get("geometry") or "cwru-de-6205", evidence_dir=d.evidence_dir))
        except ops.NotFound as exc:
            return _err(exc, 404)
        except CloudError as exc:
            return _err(exc, 400)
        return JSONResponse(json.loads(json.dumps(out, default=str)))

    async def note(req: Request) -> Response:
        try:
            body = await req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": 'send a JSON object {"note": "text"}'}, status_code=400)
        try:
            row = await run_in_threadpool(d.db, lambda s: alert_view.add_note(
                s, req.path_params["id"], body.get("note"), by=body.get("by", "dashboard"), now_ms=int(time.time() * 1000)))
        except ops.NotFound as exc:
            return _err(exc, 404)
        except ValueError as exc:
            return _err(exc, 400)
        return JSONResponse(row)

    async def trends(req: Request) -> Response:
        q = req.query_params
        try:
            now = int(time.time() * 1000)
            until = int(q.get("until_ms") or now)
            since = int(q.get("since_ms") or until - 86_400_000)
            out = await run_in_threadpool(d.db, lambda s: alert_view.sensor_trends(
                s, q["site"], q["gateway"], q["sensor"], since_ms=since, until_ms=until,
                resolution=q.get("resolution") or "auto"))
        except KeyError as exc:
            return JSONResponse({"error": f"missing query parameter {exc}"}, status_code=400)
        except ValueError as exc:
            return _err(exc, 400)
        return JSONResponse(out)

    async def history(req: Request) -> Response:
        q = req.query_params
        try:
            asset = f"{q['site']}/{q['gateway']}/{q['sensor']}"
        except KeyError as exc:
            return JSONResponse({"error": f"missing query parameter {exc}"}, status_code=400)
        limit = int(q.get("limit") or 200)  # the guard checked it: 1..max_page
        return JSONResponse(await run_in_threadpool(d.db, lambda s: asset_history(s, asset, limit=limit)))

    async def plant(_req: Request) -> Response:
        out = await run_in_threadpool(d.db, plant_overview)
        return JSONResponse({**out, "now_ms": int(time.time() * 1000)})

    async def waterfall_data(req: Request) -> Response:
        q = req.query_params
        try:
            rows = int(q.get("rows") or 24)
            out = await run_in_threadpool(d.db, lambda s: waterfall(
                s, q["site"], q["gateway"], q["sensor"], rows=rows, geometry=q.get("geometry") or "cwru-de-6205",
                evidence_dir=d.evidence_dir))
        except KeyError as exc:
            return JSONResponse({"error": f"missing query parameter {exc}"}, status_code=400)
        except ValueError:
            return JSONResponse({"error": f"rows={q.get('rows')!r}: use an integer"}, status_code=400)
        except CloudError as exc:
            return _err(exc, 400)
        return JSONResponse(out)

    async def models(_req: Request) -> Response:
        return JSONResponse(await run_in_threadpool(d.db, d.models.overview))

    async def push(req: Request) -> Response:
        body = await _json(req)
        try:
            job = d.models.start_push(str(body.get("name", "")), str(body.get("version", "")),
                                      [str(t) for t in body.get("targets") or []], float(body.get("canary_pct") or 0.0))
        except (CloudError, RegistryError, ValueError) as exc:
            return _err(exc, 400)
        return JSONResponse(job, status_code=202)

    async def rollback(req: Request) -> Response:
        body = await _json(req)
        try:
            job = d.models.start_rollback([str(t) for t in body.get("targets") or []])
        except CloudError as exc:
            return _err(exc, 400)
        return JSONResponse(job, status_code=202)

    return [
        Route("/", index), Route("/api/alerts", list_alerts), Route("/api/alerts/stream", stream),
        Route("/api/alerts/{id}/ack", ack, methods=["POST"]), Route("/api/alerts/{id}/label", label, methods=["POST"]),
        Route("/api/alerts/{id}/detail", alert_page), Route("/api/alerts/{id}/note", note, methods=["POST"]),
        Route("/api/trends", trends), Route("/api/history", history), Route("/api/plant", plant),
        Route("/api/waterfall", waterfall_data),
        Route("/api/fleet", fleet), Route("/api/sensors", sensor_list), Route("/api/sensor", sensor),
        Route("/api/models", models), Route("/api/models/push", push, methods=["POST"]),
        Route("/api/models/rollback", rollback, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _json(req: Request) -> dict[str, Any]:
    try:
        body = await req.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def create_app(store_url: str, token: str, *, broker_url: str | None = None, evidence_dir: Path | None = None,
               registry_dir: Path | None = None, poll_s: float = 0.5, max_sse_clients: int = 32,
               max_page: int = 2000) -> Starlette:
    """The dashboard app; ``app.state.dashboard`` holds the store and watches (``close()`` them).

    Query strings are checked and live streams counted (cloud/web/guard.py) behind the token check.
    """
    if len(token) < 16:
        raise CloudError("cloud.dashboard", "token shorter than 16 characters", "use new_token() or a long random string")
    d = Dashboard(store_url, broker_url=broker_url, evidence_dir=evidence_dir, registry_dir=registry_dir, poll_s=poll_s)
    app = Starlette(routes=routes(d))
    d.max_page = max_page  # the default page is cut to it; a larger ?limit= gets 400 (RequestGuard)
    app.state.dashboard = d
    d.streams = StreamSlots(max_sse_clients)
    app.add_middleware(RequestGuard, max_page=max_page)
    app.add_middleware(TokenGate, token=token)  # added last: runs first
    return app



def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(app: Starlette, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` (call ``.run()``; set ``.should_exit`` to stop it)."""
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=2))
