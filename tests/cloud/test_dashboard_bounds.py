"""Issue 19, dashboard: hostile query strings get 400 before any query, pages are capped,
live streams (SSE) are counted and the one beyond the limit gets 503."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.store import Store
from edgevib.cloud.web.dashboard import create_app, free_port, serve
from edgevib.cloud.web.guard import MAX_QUERY_BYTES, RequestGuard
from starlette.testclient import TestClient

from edgevib.errors import ConfigError

from .test_dashboard import AUTH, TOKEN, alert


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    for i in range(1, 31):
        s.apply("alert", alert(i, site="p1" if i % 2 else "p2"))
    s.close()
    return url


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    app = create_app(store_url, TOKEN, max_page=20)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    app.state.dashboard.close()


@pytest.mark.parametrize(("query", "needle"), [
    ({"limit": "21"}, "limit=21: use an integer from 1 to 20 (dashboard.max_page)"),
    ({"limit": "99999999999999999999"}, "limit="),
    ({"limit": "-1"}, "limit='-1'"),
    ({"limit": "0"}, "from 1 to 20"),
    ({"limit": "1e9"}, "limit='1e9'"),
    ({"offset": "-5"}, "offset='-5'"),
    ({"after_ms": "yesterday"}, "after_ms='yesterday'"),
    ({"since_ms": "1.5"}, "since_ms='1.5'"),
    ({"until_ms": str(2**60)}, "epoch milliseconds"),
    ({"site": "p1' OR '1'='1"}, "site=\"p1' OR '1'='1\""),
    ({"gateway": "g1; DROP TABLE alerts; --"}, "gateway="),
    ({"sensor": "x" * 65}, "at most 64"),
    ({"cls": "IR%"}, "cls='IR%'"),
    ({"asset": "a" * 201}, "at most 200 printable"),
    ({"asset": "p1/g1/de\x00"}, "printable"),
    ({f"p{i}": "1" for i in range(40)}, "at most 32"),
])
def test_hostile_query_strings_are_refused_with_400(client: TestClient, query: dict[str, str], needle: str) -> None:
    for path in ("/api/alerts", "/api/alerts/stream", "/api/sensor", "/api/fleet"):
        r = client.get(path, params=query, headers=AUTH)
        assert r.status_code == 400, (path, query, r.status_code)
        assert needle in r.json()["error"]


def test_overlong_query_string_is_refused_and_token_still_checked_first(client: TestClient) -> None:
    q = "site=p1&" + "x=" + "a" * MAX_QUERY_BYTES
    r = client.get(f"/api/alerts?{q}", headers=AUTH)
    assert r.status_code == 400 and f"at most {MAX_QUERY_BYTES}" in r.json()["error"]
    assert client.get("/api/alerts?limit=-1").status_code == 401, "no token: 401 before anything is parsed"


def test_pages_are_capped_and_sql_text_in_a_free_text_filter_is_only_data(client: TestClient) -> None:
    r = client.get("/api/alerts", params={"limit": "20"}, headers=AUTH)
    assert r.status_code == 200 and len(r.json()["alerts"]) == 20
    assert len(client.get("/api/alerts", headers=AUTH).json()["alerts"]) == 20, "the default page is within max_page"
    # asset is free text: the store binds it as a parameter, so SQL in it matches nothing.
    r = client.get("/api/alerts", params={"asset": "x' OR '1'='1"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["alerts"] == []
    r = client.get("/api/alerts", params={"site": "p2", "limit": "20"}, headers=AUTH)
    assert r.status_code == 200 and {a["site"] for a in r.json()["alerts"]} == {"p2"} and len(r.json()["alerts"]) == 15
    assert client.app.middleware_stack  # type: ignore[attr-defined]


def test_config_keys_validated() -> None:
    assert load_config(None).dashboard.max_sse_clients == 32 and load_config(None).dashboard.max_page == 2000
    with pytest.raises(ConfigError, match="dashboard.max_sse_clients=0"):
        load_config(None, env={"EDGEVIB_DASHBOARD__MAX_SSE_CLIENTS": "0"})


def test_the_stream_beyond_max_sse_clients_gets_503_and_a_closed_one_frees_its_place(store_url: str) -> None:
    app = create_app(store_url, TOKEN, poll_s=0.1, max_sse_clients=2)
    port = free_port()
    server = serve(app, "127.0.0.1", port)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}/api/alerts/stream"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with contextlib.ExitStack() as stack:
            held = []  # the line iterators: dropping one closes its stream
            for _ in range(2):
                r = stack.enter_context(httpx.stream("GET", url, headers=AUTH, timeout=10))
                assert r.status_code == 200
                held.append(r.iter_lines())
                assert next(held[-1]).startswith("retry:")
            assert app.state.dashboard.streams.open == 2
            third = httpx.get(url, headers=AUTH, timeout=10)  # a 200 here would time out (an endless stream)
            assert third.status_code == 503 and third.headers["retry-after"] == "10"
            assert "dashboard.max_sse_clients=2" in third.json()["error"]
            assert httpx.get(url.replace("/stream", ""), headers=AUTH, timeout=10).status_code == 200, \
                "other routes are not limited by the stream count"
        # The server notices the closed streams at its next poll.
        deadline = time.monotonic() + 10
        while True:
            with httpx.stream("GET", url, headers=AUTH, timeout=10) as r:
                if r.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream's place was not freed"
            time.sleep(0.2)
    finally:
        server.should_exit = True
        th.join(10)
        app.state.dashboard.close()


def test_guard_is_behind_the_token_gate() -> None:
    app = create_app("sqlite:///:memory:", TOKEN)
    kinds = [m.cls for m in app.user_middleware]
    assert app.state.dashboard.streams.max_streams == 32
    assert kinds.index(RequestGuard) > 0, "TokenGate (outermost) runs before RequestGuard"
    app.state.dashboard.close()
