"""MqttLink with credentials and TLS against a private Mosquitto that demands them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgevib.edge.mqtt import MqttLink, Tls

from edgevib.broker import MosquittoProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def pub_dir() -> Iterator[Path]:
    """A directory the broker can read: Mosquitto drops root for its own user; pytest's tmp is 0700."""
    d = Path(tempfile.mkdtemp(prefix="edgevib-sec-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _broker(extra: str) -> Iterator[MosquittoProcess]:
    # A second listener carries the policy; the fixture-style default listener stays loopback-only.
    b = MosquittoProcess(extra_conf=extra)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def auth_broker(pub_dir: Path) -> Iterator[tuple[MosquittoProcess, int]]:
    pw = pub_dir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "gw1", "s3cret"], check=True, capture_output=True)
    pw.chmod(0o644)  # mosquitto runs as its own user
    port = free_port()
    yield from ((b, port) for b in _broker(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"))


def test_credentials_are_required_and_used(auth_broker: tuple[MosquittoProcess, int]) -> None:
    _b, port = auth_broker
    good = MqttLink(f"mqtt://127.0.0.1:{port}", "good", username="gw1", password="s3cret")
    bad = MqttLink(f"mqtt://127.0.0.1:{port}", "bad", username="gw1", password="wrong", reconnect=(1, 1))
    anon = MqttLink(f"mqtt://127.0.0.1:{port}", "anon", reconnect=(1, 1))
    try:
        assert good.wait_connected(5)
        time.sleep(1.0)
        assert not bad.connected and not anon.connected
        assert good.publish("t/x", b"1", qos=1) is not None
    finally:
        for link in (good, bad, anon):
            link.close()


@pytest.fixture
def tls_broker(pub_dir: Path) -> Iterator[tuple[MosquittoProcess, int, Path]]:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=pub_dir)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=edgevib-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (pub_dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
        "-days", "1", "-extfile", "san.ext")
    for f in pub_dir.iterdir():
        f.chmod(0o644)
    port = free_port()
    yield from ((b, port, pub_dir) for b in _broker(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {pub_dir}/ca.pem\ncertfile {pub_dir}/srv.pem\nkeyfile {pub_dir}/srv.key\n"))


def test_tls_with_the_ca_connects_and_plain_mqtt_does_not(tls_broker: tuple[MosquittoProcess, int, Path]) -> None:
    _b, port, d = tls_broker
    secure = MqttLink(f"mqtts://127.0.0.1:{port}", "tls", tls=Tls(ca=str(d / "ca.pem")))
    plain = MqttLink(f"mqtt://127.0.0.1:{port}", "plain", reconnect=(1, 1))
    try:
        assert secure.wait_connected(5)
        assert not plain.wait_connected(1.5)
    finally:
        secure.close()
        plain.close()
