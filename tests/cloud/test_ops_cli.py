"""``edgevib alerts|fleet`` against a SQLite store: tables, --json, exit codes, --follow, ack."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgevib.cloud import ops
from edgevib.cloud.store import Store
from edgevib.edge.mqtt import MqttLink

from edgevib.broker import MosquittoProcess
from edgevib.cli import main


def alert(i: int, *, site: str = "p1", sensor: str = "de", cls: str = "IR007", ev_ms: int | None = None) -> dict[str, object]:
    return {"id": f"alert{i:04d}xyz", "site": site, "gateway": "g1", "sensor": sensor, "asset": f"{site}/g1/{sensor}",
            "akind": "fault", "state": "raised", "cls": cls, "severity": "info", "probability": 0.91,
            "ev_ms": ev_ms if ev_ms is not None else 1_700_000_000_000 + i * 1000, "recv_ms": 1_700_000_000_000 + i * 1000,
            "late": 0, "model_name": "cnn_small", "model_version": "1", "mid": f"m{i}"}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    s.apply("alert", alert(1))
    s.apply("alert", alert(2, site="p2", sensor="fe", cls="OR021"))
    s.apply("alert", alert(3, cls="B014"))
    s.apply("gateway", {"site": "p1", "gateway": "g1", "status": "online", "last_seen_ms": 1, "last_hb_ms": 1_700_000_000_000,
                        "model_name": "cnn_small", "model_version": "1", "model_sha256": "ab" * 32,
                        "agent_version": "0.1.0", "uptime_s": 12.0, "outbox_pending": 4, "drops_total": 2,
                        "reported_status": "online"})
    s.apply("gateway", {"site": "p2", "gateway": "g9", "status": "offline", "last_hb_ms": None})
    s.close()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["-q", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_alerts_table_lists_newest_with_header(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    rc, out, _ = run(capsys, "alerts", "--store", store_url)
    lines = out.splitlines()
    assert rc == 0
    assert lines[0].split()[:3] == ["time", "id", "asset"]
    assert [ln.split()[2] for ln in lines[1:]] == ["alert0001xyz", "alert0002xyz", "alert0003xyz"]  # oldest first
    rc, out, _ = run(capsys, "alerts", "--store", store_url, "--limit", "1")
    assert len(out.splitlines()) == 2 and "alert0003xyz" in out


def test_alerts_filters_and_json(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    rc, out, _ = run(capsys, "alerts", "--store", store_url, "--json", "--site", "p1")
    assert rc == 0
    assert [a["id"] for a in json.loads(out)] == ["alert0001xyz", "alert0003xyz"]
    _, out, _ = run(capsys, "alerts", "--store", store_url, "--json", "--class", "OR")
    assert [a["cls"] for a in json.loads(out)] == ["OR021"]
    _, out, _ = run(capsys, "alerts", "--store", store_url, "--json", "--asset", "p1/g1/de", "--class", "B014")
    assert [a["id"] for a in json.loads(out)] == ["alert0003xyz"]
    _, out, _ = run(capsys, "alerts", "--store", store_url, "--json", "--class", "IR0%")  # LIKE wildcards are literal
    assert [a["id"] for a in json.loads(out)] == ["alert0001xyz"]


def test_ack_by_prefix_shows_in_listing_and_unknown_id_is_1(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    rc, out, _ = run(capsys, "alerts", "ack", "alert0002", "--store", store_url, "--by", "ana")
    assert rc == 0 and "acknowledged alert0002xyz by ana" in out
    _, out, _ = run(capsys, "alerts", "--store", store_url, "--json")
    assert {a["id"]: a["acked_by"] for a in json.loads(out)} == {"alert0001xyz": None, "alert0002xyz": "ana", "alert0003xyz": None}
    rc, _, err = run(capsys, "alerts", "--store", store_url, "ack", "nosuchalert")
    assert rc == 1 and "no alert 'nosuchalert'" in err
    rc, _, err = run(capsys, "alerts", "ack", "alert0", "--store", store_url)  # ambiguous prefix
    assert rc == 1 and "several" in err


def test_fleet_table_and_json(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    rc, out, _ = run(capsys, "fleet", "--store", store_url)
    assert rc == 0
    row = next(ln for ln in out.splitlines() if ln.startswith("p1/g1"))
    assert row.split()[1] == "online" and " 4 " in row and "cnn_small 1" in row
    assert out.splitlines()[-1] == "2 gateways, 1 online"
    _, out, _ = run(capsys, "fleet", "--store", store_url, "--json")
    doc = {f"{g['site']}/{g['gateway']}": g for g in json.loads(out)}
    assert doc["p2/g9"]["status"] == "offline" and doc["p1/g1"]["drops_total"] == 2


def test_exit_codes_unreachable_store_and_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "alerts", "--store", f"sqlite:///{tmp_path / 'missing.db'}")
    assert rc == 4 and "no store at" in err and "edgevib cloud run" in err
    assert not (tmp_path / "missing.db").exists()  # reading never creates a store
    rc, _, _ = run(capsys, "fleet", "--store", "postgresql://nobody@127.0.0.1:1/none")
    assert rc == 4
    with pytest.raises(SystemExit) as exc:
        main(["alerts", "--limit", "many"])
    assert exc.value.code == 2


def test_label_without_the_labels_module_or_with_it(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    rc, out, err = run(capsys, "alerts", "label", "alert0001xyz", "IR014", "--store", store_url, "--by", "ana")
    try:
        import edgevib.cloud.learning.labels  # noqa: F401
    except ModuleNotFoundError:
        assert rc == 1 and "labelling needs" in err
        return
    assert rc == 0, err
    s = Store(store_url)
    assert s.query("SELECT cls, labelled_by FROM labels WHERE alert_id = ?", ("alert0001xyz",)) == [("IR014", "ana")]
    s.close()


def readline_within(p: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or fail after ``timeout`` s (a bare readline could hang the suite)."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return p.stdout.readline()


def test_follow_prints_a_row_added_after_it_started_and_stops_on_ctrl_c(store_url: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as in a terminal: a test run started in the background by a shell without job control
    # ignores SIGINT, children inherit that, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen([sys.executable, "-m", "edgevib.cli", "-q", "alerts", "--store", store_url, "--follow", "--json",
                          "--interval", "0.1", "--limit", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert p.stdout is not None
        first = json.loads(readline_within(p, 30))
        assert first["id"] == "alert0003xyz"
        s = Store(store_url)
        s.apply("alert", alert(4, ev_ms=1_600_000_000_000))  # an old event, stored now: still new to a follower
        s.close()
        assert json.loads(readline_within(p, 30))["id"] == "alert0004xyz"
    finally:
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(15)
        finally:
            if p.poll() is None:  # never leave a follower running after a failure
                p.kill()
                p.wait(10)
    assert p.stderr is not None
    err = p.stderr.read()
    assert rc == 130 and "Traceback" not in err, err


@pytest.mark.integration
def test_label_with_a_broker_publishes_the_label_event(capsys: pytest.CaptureFixture[str], store_url: str,
                                                       broker: MosquittoProcess) -> None:
    sub = MqttLink(broker.url, "label-watch")
    sub.subscribe("edgevib/v1/p1/g1/labels")
    try:
        assert sub.wait_connected(5)
        time.sleep(0.3)  # the SUBSCRIBE goes out on connect
        rc, out, err = run(capsys, "alerts", "label", "alert0003", "B021", "--store", store_url, "--by", "ana",
                           "--broker", broker.url)
        assert rc == 0, err
        msg = sub.poll(10)
    finally:
        sub.close()
    assert msg is not None, "no label event on MQTT"
    doc = json.loads(msg.payload)
    assert (doc["schema"], doc["alert_id"], doc["class"], doc["labelled_by"]) == ("edgevib.label/1", "alert0003xyz", "B021", "ana")


def test_dashboard_command_refuses_a_short_token_and_defaults_to_localhost(capsys: pytest.CaptureFixture[str],
                                                                          store_url: str) -> None:
    rc, _, err = run(capsys, "dashboard", "--store", store_url, "--token", "short")
    assert rc == 2 and "16 characters" in err
    from edgevib.cli import build_parser

    args = build_parser().parse_args(["dashboard"])
    assert args.host is None and args.port is None  # so [dashboard] host/port apply: 127.0.0.1:8765 by default


def test_the_cli_part_imports_no_heavy_dependency() -> None:
    code = ("import sys, edgevib.cloud.ops_cli; print(sorted(m for m in ('numpy', 'scipy', 'starlette', 'uvicorn', "
            "'paho', 'onnxruntime', 'torch', 'pyflink', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_the_same_queries_on_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    s = Store(pg_url)
    for i, (site, cls) in enumerate([("p1", "IR007"), ("p2", "OR021"), ("p1", "B014")], 1):
        s.apply("alert", alert(i, site=site, cls=cls))
    try:
        assert [a["id"] for a in ops.alerts(s, ops.AlertFilter(site="p1"))] == ["alert0001xyz", "alert0003xyz"]
        assert [a["cls"] for a in ops.alerts(s, ops.AlertFilter(cls="OR"))] == ["OR021"]
        assert ops.alerts(s, ops.AlertFilter(cls="_R")) == []  # an escaped _, not a wildcard
        assert [a["id"] for a in ops.alerts(s, ops.AlertFilter(cls="IR0%"))] == ["alert0001xyz"]  # % dropped
        cursor = ops.cursor_now(s)
        s.apply("alert", alert(4, ev_ms=1))
        assert [a["id"] for a in ops.alerts_since(s, cursor)] == ["alert0004xyz"]
        ops.ack(s, "alert0002", by="ana", now_ms=5)
        assert {a["id"]: a["acked_by"] for a in ops.alerts(s)}["alert0002xyz"] == "ana"
    finally:
        s.close()
    rc, out, err = run(capsys, "alerts", "--store", pg_url, "--json", "--class", "B")
    assert rc == 0, err
    assert [a["id"] for a in json.loads(out)] == ["alert0003xyz"]
