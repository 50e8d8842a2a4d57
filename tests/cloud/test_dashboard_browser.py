"""The dashboard in Debian's headless chromium (Selenium 4, the system chromedriver, nothing downloaded).

(a) the page loads after /login with the token, a live alert written to the store appears
without a reload, and the sensor page draws an evidence window's spectra with its BPFO marker; (b) a push clicked in the page reaches a real agent on a real broker: its
heartbeat reports the new model's sha256 and the page shows the gateway's ``installed`` verdict.
Screenshots go to ``$EDGEVIB_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgevib.cloud.learning.dataset import EvidenceStore
from edgevib.cloud.store import Store
from edgevib.cloud.web.dashboard import create_app, free_port, serve
from edgevib.edge.cli import run_agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.mqtt import MqttLink
from edgevib.models.registry import Registry, keygen

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.evidence import EvidenceRecord
from edgevib.protocol.evidence import encode as encode_evidence
from edgevib.protocol.frames import Frame, encode
from tests.cloud.test_dashboard import outer_race_window
from tests.conftest import IN_CI, REPO, wait_until
from tests.edge.tinymodels import tiny_onnx

pytestmark = pytest.mark.integration
TOKEN = "browser-test-token-0123456789"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
APT = "apt-get install -y chromium chromium-driver"


def artifacts() -> Path:
    d = Path(os.environ.get("EDGEVIB_ARTIFACTS") or REPO / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.access(p, os.X_OK) or shutil.which(Path(p).name))]
    if missing:
        msg = f"{', '.join(missing)} not installed: {APT}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: the browser test must run)")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()


class Served:
    def __init__(self, store_url: str, **kw: Any) -> None:
        self.app = create_app(store_url, TOKEN, poll_s=0.2, **kw)
        self.port = free_port()
        self.server = serve(self.app, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: bool(self.server.started), 20, "the dashboard to start")
        self.base = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.dashboard.close()


def alert(i: int, cls: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"id": f"browser{i:04d}", "site": "plant", "gateway": "gw", "sensor": "de", "asset": "plant/gw/de",
            "akind": "fault", "state": "raised", "cls": cls, "severity": "critical", "probability": 0.93, "ev_ms": now,
            "recv_ms": now, "late": 0, "model_name": "cnn_small", "model_version": "1", "mid": f"m{i}"}


def test_page_loads_with_the_token_and_a_live_alert_appears_without_reload(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    s.apply("alert", alert(1, "IR007"))
    srv = Served(url, evidence_dir=tmp_path / "dataset")
    (tmp_path / "dataset").mkdir()
    try:
        driver.get(srv.base + "/")
        assert "401" in driver.find_element(By.TAG_NAME, "body").text  # no token, no page
        driver.get(f"{srv.base}/login?token={TOKEN}")
        assert driver.title == "edgevib dashboard"
        wait_until(lambda: bool(driver.find_elements(By.ID, "alert-browser0001")), 15, "the stored alert in the table")
        wait_until(lambda: driver.find_element(By.ID, "live").text == "live", 15, "the event stream to connect")
        s.apply("alert", alert(2, "OR021"))  # written while the page is open
        wait_until(lambda: bool(driver.find_elements(By.ID, "alert-browser0002")), 15, "the live alert to appear")
        row = driver.find_element(By.ID, "alert-browser0002")
        assert "OR021" in row.text and "plant/gw/de" in row.text
        loads = driver.execute_script("return performance.getEntriesByType('navigation').length")
        assert loads == 1  # the same page: nothing reloaded
        row.find_element(By.CSS_SELECTOR, "button.do-ack").click()
        wait_until(lambda: "✓" in driver.find_element(By.CSS_SELECTOR, "#alert-browser0002 td.ack").text, 10, "the ack")
        assert s.query("SELECT acked_by FROM alert_acks WHERE alert_id = 'browser0002'") == [("dashboard",)]
        driver.save_screenshot(str(artifacts() / "dashboard-alerts.png"))
        # The sensor page: spectra of an evidence window the collector stored (an outer-race fault).
        es = EvidenceStore(s, tmp_path / "dataset")
        rec = EvidenceRecord.build(site="plant", gateway="gw", sensor="de", t_ns=time.time_ns(), rpm=1750.0,
                                   sample_rate=12000.0, reason="alert", alert_id="browser0002",
                                   probs={"OR021": 0.9, "normal": 0.1}, model={"name": "cnn_small", "version": "1",
                                   "sha256": "ab" * 32}, window=outer_race_window(np.random.default_rng(3), 12000.0, 1750.0))
        assert es.put(encode_evidence(rec), proto.Topics("plant", "gw").evidence) is not None
        driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="sensor"]').click()
        wait_until(lambda: "plant/gw/de" in driver.find_element(By.ID, "sensor-pick").text, 10, "the sensor list")
        driver.find_element(By.ID, "sensor-load").click()
        wait_until(lambda: "envelope check says OR" in driver.find_element(By.ID, "sensor-note").text, 15, "the sensor view")
        note = driver.find_element(By.ID, "sensor-note").text
        assert "BPFO 104.6 Hz" in note and "1750 rpm" in note, note  # 3.5848 orders x 1750/60 Hz
        drawn = driver.execute_script(  # the envelope canvas is not blank
            "const c = document.querySelector('#c-env canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;")
        assert drawn > 1000
        # class probabilities over time: a uPlot chart (the chart library), not a hand-drawn canvas
        assert driver.execute_script("return document.querySelector('#c-prob .uplot') !== null")
        assert _drawn(driver, "#c-prob") > 500
        driver.save_screenshot(str(artifacts() / "dashboard-sensor.png"))
    finally:
        srv.close()
        s.close()


def _drawn(driver: Any, sel: str) -> int:
    """Non-transparent pixels of the uPlot canvas inside ``sel`` (0: no canvas or blank)."""
    return int(driver.execute_script(
        "const c = document.querySelector(arguments[0] + ' canvas'); if (!c) return 0;"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;", sel))


def test_alert_detail_and_trends_pages_draw_store_data(driver: Any, tmp_path: Path) -> None:
    """An alert through the ingest (fused verdict, physics evidence), its evidence window, a day of indicators and
    1-min rollups: the alert page shows the verdict, the charts and a note typed into it; the trends page the zones."""
    from selenium.webdriver.common.by import By

    from tests.cloud.test_alert_pages import EVIDENCE

    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    now = int(time.time() * 1000)
    t_alert = now - 1_800_000
    a = proto.make_alert(site="plant", gateway="gw", sensor="de", kind="fault", state="raised", t_ns=t_alert * 1_000_000,
                         cls="OR021", probability=0.91, physics="OR", agree=True, evidence=EVIDENCE,
                         model={"name": "cnn_small", "version": "1", "sha256": "ab" * 32})
    a["verdict"] = {"fault_type": "OR", "confidence": 0.87, "carried_by": ["model", "physics"], "model": "OR", "physics": "OR"}
    from edgevib.cloud.ingest.records import normalize

    rec = normalize("edgevib/v1/plant/gw/alerts", proto.dumps(a), recv_ms=t_alert + 50, mid="m-detail")
    s.apply("alert", {**rec, "late": 0})
    (tmp_path / "dataset").mkdir()
    es = EvidenceStore(s, tmp_path / "dataset")
    ev = EvidenceRecord.build(site="plant", gateway="gw", sensor="de", t_ns=t_alert * 1_000_000, rpm=1750.0,
                              sample_rate=12000.0, reason="alert", alert_id=rec["id"], probs={"OR021": 0.91, "normal": 0.09},
                              model={"name": "cnn_small", "version": "1", "sha256": "ab" * 32},
                              window=outer_race_window(np.random.default_rng(5), 12000.0, 1750.0))
    assert es.put(encode_evidence(ev), proto.Topics("plant", "gw").evidence) is not None
    # a day of indicators every 5 min, drifting from zone A into zone C (group 2, rigid: B 1.4, C 2.8, D 4.5 mm/s)
    for k in range(289):
        t = now - 86_400_000 + k * 300_000
        vel = 1.0 + 2.6 * (k / 288) ** 3
        zone = "A" if vel <= 1.4 else "B" if vel <= 2.8 else "C"
        s.apply("indicator", {"id": f"i{k}", "site": "plant", "gateway": "gw", "sensor": "de", "asset": "plant/gw/de",
                              "t_ms": t, "recv_ms": t, "acc_rms_g": vel / 8, "acc_peak_g": vel / 2, "crest": 4.0,
                              "kurtosis": 3.0 + k / 100, "vel_rms_mm_s": vel, "iso_zone": zone, "iso_group": 2,
                              "iso_foundation": "rigid"})
        s.apply("indicator_rollup", {"site": "plant", "gateway": "gw", "sensor": "de", "asset": "plant/gw/de",
                                     "resolution_s": 60, "window_start": t, "window_end": t + 60_000, "n": 6,
                                     "vel_min": vel * 0.9, "vel_mean": vel, "vel_max": vel * 1.1, "acc_rms_min": vel / 9,
                                     "acc_rms_mean": vel / 8, "acc_rms_max": vel / 7, "kurtosis_min": 3.0,
                                     "kurtosis_mean": 3.0 + k / 100, "kurtosis_max": 3.5 + k / 100, "worst_zone": zone})
    srv = Served(url, evidence_dir=tmp_path / "dataset")
    try:
        driver.get(f"{srv.base}/login?token={TOKEN}")
        wait_until(lambda: bool(driver.find_elements(By.ID, f"alert-{rec['id']}")), 15, "the alert in the table")
        driver.find_element(By.CSS_SELECTOR, f"#alert-{rec['id']} a.open-alert").click()
        wait_until(lambda: driver.find_element(By.ID, "ad-verdict").text == "OR (87 %)", 15, "the fused verdict")
        assert "carried by model + physics" in driver.find_element(By.ID, "ad-verdict-note").text
        physics = driver.find_element(By.ID, "ad-physics").text
        assert "agrees" in physics and "OR 14.2 dB" in physics and "bpfo 107.5 Hz" in physics, physics
        assert "The window uploaded for this alert" in driver.find_element(By.ID, "ad-ev-note").text
        for sel in ("#ad-wave", "#ad-spec", "#ad-env", "#ad-trend"):
            assert _drawn(driver, sel) > 1000, sel
        driver.find_element(By.ID, "ad-note").send_keys("bearing noise confirmed on site")
        driver.find_element(By.CSS_SELECTOR, "#ad-note-form button").click()
        wait_until(lambda: "bearing noise confirmed on site" in driver.find_element(By.ID, "ad-history").text, 10,
                   "the note in the history")
        assert s.query("SELECT note FROM alert_notes WHERE alert_id = ?", (rec["id"],)) == [("bearing noise confirmed on site",)]
        driver.save_screenshot(str(artifacts() / "dashboard-alert-detail.png"))
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        driver.save_screenshot(str(artifacts() / "dashboard-alert-detail-history.png"))
        driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="trends"]').click()
        wait_until(lambda: "plant/gw/de" in driver.find_element(By.ID, "trend-pick").text, 10, "the sensor list")
        driver.find_element(By.ID, "trend-load").click()
        wait_until(lambda: "1-min rollups" in driver.find_element(By.ID, "trend-note").text, 15, "the trend")
        note = driver.find_element(By.ID, "trend-note").text
        assert "zone B from 1.4, C from 2.8, D from 4.5 mm/s" in note and "zone C" in note and "1 alerts" in note, note
        assert _drawn(driver, "#tr-vel") > 1000 and _drawn(driver, "#tr-acc") > 1000
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(artifacts() / "dashboard-trends.png"))
    finally:
        srv.close()
        s.close()


def test_push_clicked_in_the_page_reaches_a_real_agent(driver: Any, broker: MosquittoProcess, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    priv, pub = keygen(tmp_path / "keys")
    (tmp_path / "base.onnx").write_bytes(tiny_onnx("good", version="1"))
    (tmp_path / "good.onnx").write_bytes(tiny_onnx("good", version="2"))
    reg = Registry(tmp_path / "registry", private_key=priv)
    new = reg.add(tmp_path / "good.onnx", metrics={"accuracy": 0.99})
    cfg = load_agent_config(None, env={}, broker_url=broker.url, site="plant", gateway="gw",
                            model=str(tmp_path / "base.onnx"), heartbeat_s=0.3, batch_size=8,
                            outbox={"path": str(tmp_path / "outbox.sqlite")},
                            update={"public_key": str(pub), "model_dir": str(tmp_path / "models")})
    stop = threading.Event()
    agent = threading.Thread(target=run_agent, args=(cfg, stop), daemon=True)
    agent.start()
    beats: list[dict[str, Any]] = []
    watch = MqttLink(broker.url, "browser-watch")
    watch.subscribe("edgevib/v1/plant/gw/heartbeat")
    pump_stop = threading.Event()

    def pump() -> None:
        while not pump_stop.is_set():
            m = watch.poll(0.1)
            if m is not None:
                beats.append(json.loads(m.payload))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(url).close()
    srv = Served(url, broker_url=broker.url, registry_dir=tmp_path / "registry")
    tx = MqttLink(broker.url, "browser-sensors")
    try:
        assert tx.wait_connected(5)
        wait_until(lambda: bool(beats), 30, "the agent's first heartbeat")
        rng, n = np.random.default_rng(7), np.arange(4096)
        for i in range(12):  # quiet windows: what the new model is shadow-run on before the swap
            x = rng.normal(0, 0.1, 4096) + 0.0 * n
            tx.publish(proto.Topics("plant", "gw").raw("de"),
                       encode(Frame(i, i * 4096 * 10**9 // 12000, 12000.0, x.astype(np.float32))), qos=1)
        wait_until(lambda: int(beats[-1]["counters"].get("windows", 0)) >= 15, 30, "windows inferred")
        driver.get(f"{srv.base}/login?token={TOKEN}")
        driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="models"]').click()
        wait_until(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "#registry tr[data-name='good'] button.do-push")), 15,
             "the registry row")
        driver.find_element(By.ID, "targets").send_keys("plant/gw")
        driver.find_element(By.CSS_SELECTOR, "#registry tr[data-name='good'] button.do-push").click()
        wait_until(lambda: beats[-1]["model"]["sha256"] == new.sha256, 60, "the agent's heartbeat to show the new model")
        wait_until(lambda: "installed" in driver.find_element(By.ID, "verdicts").text, 30, "the verdict on the page")
        wait_until(lambda: "done" in driver.find_element(By.ID, "jobs").text, 10, "the push job to finish")
        assert "good 2" in driver.find_element(By.ID, "verdicts").text
        driver.save_screenshot(str(artifacts() / "dashboard-models.png"))
    finally:
        srv.close()
        tx.close()
        stop.set()
        agent.join(10)
        pump_stop.set()
        t.join(2)
        watch.close()


def test_plant_overview_history_and_waterfall_pages(driver: Any, tmp_path: Path) -> None:
    """The plant tiles coloured by worst state (sorted by criticality), a tile opening its sensor's trend with the
    level crossings and the asset history (notes included), and the waterfall of stored envelope spectra."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.cloud.test_plant_pages import seed

    url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store(url)
    now = int(time.time() * 1000)
    seed(s, now - 60_000)
    (tmp_path / "dataset").mkdir()
    es = EvidenceStore(s, tmp_path / "dataset")
    rng = np.random.default_rng(2)
    for k in range(12):  # an outer-race fault appears half-way and grows
        x = 0.3 * rng.normal(size=12000) + (k >= 6) * (k - 5) / 6 * outer_race_window(rng, 12000.0, 1750.0)
        rec = EvidenceRecord.build(site="p", gateway="g1", sensor="pump", t_ns=(now - (12 - k) * 300_000) * 1_000_000,
                                   rpm=1750.0, sample_rate=12000.0, reason="healthy_sample", alert_id=None,
                                   probs={"normal": 0.8, "OR021": 0.2}, window=x,
                                   model={"name": "m", "version": "1", "sha256": "ab" * 32})
        assert es.put(encode_evidence(rec), proto.Topics("p", "g1").evidence) is not None
    srv = Served(url, evidence_dir=tmp_path / "dataset")
    try:
        driver.get(f"{srv.base}/login?token={TOKEN}")
        driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="plant"]').click()
        wait_until(lambda: bool(driver.find_elements(By.ID, "tile-p-g1-pump")), 15, "the plant tiles")
        colour = {t.get_attribute("data-asset"): t.get_attribute("class").split("st-")[1]
                  for t in driver.find_elements(By.CSS_SELECTOR, "#plant .tile")}
        assert colour == {"p/g1/fan": "good", "p/g1/pump": "warning", "p/g1/motor": "alarm", "p/g2/gear": "offline",
                          "q/g9/mill": "alarm"}, colour
        order = [t.get_attribute("data-asset") for t in driver.find_elements(By.CSS_SELECTOR, "#plant .tile")]
        assert order == ["p/g1/motor", "p/g1/pump", "p/g1/fan", "p/g2/gear", "q/g9/mill"], order
        assert "2 alarm" in driver.find_element(By.ID, "plant-note").text
        driver.save_screenshot(str(artifacts() / "dashboard-plant.png"))
        Select(driver.find_element(By.ID, "plant-sort")).select_by_value("name")
        def first_tile() -> str | None:
            try:  # the list is redrawn on sorting: a tile found just before may be gone
                return str(driver.find_elements(By.CSS_SELECTOR, "#plant .tile")[0].get_attribute("data-asset"))
            except (StaleElementReferenceException, IndexError):
                return None

        wait_until(lambda: first_tile() == "p/g1/fan", 10, "the tiles sorted by name")
        driver.find_element(By.ID, "tile-p-g1-pump").click()  # opens its trend and history
        wait_until(lambda: "greased the bearing" in driver.find_element(By.ID, "asset-history").text, 15, "the history")
        hist = driver.find_element(By.ID, "asset-history").text
        for what in ("level raised", "model changed", "alert cleared", "note", "ack", "alert raised"):
            assert what in hist, (what, hist)
        assert "1 level crossings" in driver.find_element(By.ID, "trend-note").text
        assert _drawn(driver, "#tr-vel") > 1000
        driver.execute_script("document.getElementById('asset-history').scrollIntoView()")
        driver.save_screenshot(str(artifacts() / "dashboard-asset-history.png"))
        driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="waterfall"]').click()
        wait_until(lambda: "p/g1/pump" in driver.find_element(By.ID, "wf-pick").text, 10, "the sensor list")
        Select(driver.find_element(By.ID, "wf-pick")).select_by_visible_text("p/g1/pump")
        driver.find_element(By.ID, "wf-load").click()
        wait_until(lambda: "12 windows" in driver.find_element(By.ID, "wf-note").text, 20, "the waterfall")
        assert "BPFO 104.6 Hz" in driver.find_element(By.ID, "wf-note").text
        assert _drawn(driver, "#wf-chart") > 5000
        n_series = driver.execute_script("return document.querySelectorAll('#wf-chart .u-series').length")
        assert n_series in (0, 13)  # uPlot's legend rows, when shown: x + one per window
        driver.save_screenshot(str(artifacts() / "dashboard-waterfall.png"))
    finally:
        srv.close()
        s.close()
