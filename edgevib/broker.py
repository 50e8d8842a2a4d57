"""Find an MQTT broker, or run a private Mosquitto for tests and the demo.

>>> b = MosquittoProcess()          # a private Mosquitto on a free port
>>> b.start(); reachable("127.0.0.1", b.port), b.url == f"mqtt://127.0.0.1:{b.port}"
(True, True)
>>> b.stop(); reachable("127.0.0.1", b.port, 0.2)
False
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edgevib.errors import ConfigError, FatalError, RetryableError

log = logging.getLogger(__name__)


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` -> (host, port, tls). ``mqtts://`` means TLS (default port 8883)."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError("broker", f"url {url!r} has scheme {u.scheme!r}", "use mqtt://HOST:PORT or mqtts://HOST:PORT")
    tls = u.scheme in ("mqtts", "ssl")
    if not u.hostname:
        raise ConfigError("broker", f"url {url!r} has no host", "use mqtt://HOST:PORT")
    return u.hostname, u.port or (8883 if tls else 1883), tls


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoProcess:
    """A private ``mosquitto`` on 127.0.0.1, on a port of its own; can be stopped and restarted.

    ``max_queued`` raises Mosquitto's default of 1000 queued messages per client, which
    silently drops QoS 0 and 1 messages for a subscriber that falls behind.
    """

    def __init__(self, port: int | None = None, *, max_queued: int = 100_000, extra_conf: str = "") -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise FatalError("broker", "no mosquitto executable on PATH", "apt-get install mosquitto")
        self.exe = exe
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="edgevib-mosq-"))
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages {max_queued}\nmax_inflight_messages 1000\n{extra_conf}\n"
        )
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "mosquitto.log", "ab"),  # noqa: SIM115 - lives as long as the process
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if reachable("127.0.0.1", self.port, 0.2):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log_text = (self._dir / "mosquitto.log").read_text(errors="replace")[-500:]
        raise RetryableError("broker", f"mosquitto did not listen on port {self.port}: {log_text}", "check the port is free")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """An in-process MQTT broker (amqtt) for machines without Mosquitto; demo use only."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: Any = None
        self._thread: Any = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        import asyncio
        import threading

        from edgevib.extras import require

        broker_mod = require("amqtt.broker", extra="dev", feature="embedded demo broker")
        cfg = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._broker = broker_mod.Broker(cfg, loop=loop)
            loop.run_until_complete(self._broker.start())
            loop.run_forever()
            loop.close()

        t = threading.Thread(target=run, name="embedded-broker", daemon=True)
        t.start()
        self._thread = t
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if reachable("127.0.0.1", self.port, 0.2):
                return
            time.sleep(0.1)
        raise RetryableError("broker", f"embedded broker did not listen on port {self.port}", "install mosquitto")

    def stop(self) -> None:
        import asyncio
        import concurrent.futures

        loop, broker = self._loop, self._broker
        if loop is None:
            return
        if broker is not None:
            try:  # let amqtt end its own tasks, or they complain when the loop goes away
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(5)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                log.warning("embedded broker: shutdown incomplete (%s)", exc)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._loop = self._broker = None


def find_or_start(url: str | None = None) -> tuple[str, MosquittoProcess | EmbeddedBroker | None]:
    """Use ``url`` or a broker on 127.0.0.1:1883; else start Mosquitto, else an embedded one.

    Returns the URL and the broker this call started (``None`` when one was found).
    """
    if url:
        host, port, _ = parse_url(url)
        if not reachable(host, port, 1.0):
            raise RetryableError("broker", f"no MQTT broker answers at {url}", "start one or leave --broker out")
        return url, None
    if reachable("127.0.0.1", 1883, 0.5):
        log.info("using the MQTT broker found on 127.0.0.1:1883")
        return "mqtt://127.0.0.1:1883", None
    started: MosquittoProcess | EmbeddedBroker
    try:
        started = MosquittoProcess()
        log.info("no broker found; starting mosquitto on port %d", started.port)
    except FatalError:
        started = EmbeddedBroker()
        log.info("no broker and no mosquitto; starting an embedded broker on port %d", started.port)
    started.start()
    return started.url, started
