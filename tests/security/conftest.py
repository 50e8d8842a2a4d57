"""A test PKI (cryptography x509) and a private Mosquitto running deploy/mosquitto/mosquitto.conf.

The shipped broker config is used as written, with three rewrites only: its listeners bind
127.0.0.1 on free ports, ``/mosquitto/...`` paths point into a temporary directory, and
persistence is off.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgevib.broker import MosquittoProcess, free_port
from tests.conftest import REPO, _missing

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAVE_CRYPTO = True
except ModuleNotFoundError:  # reported by make_pki (fails in CI, skips elsewhere)
    HAVE_CRYPTO = False

SHIPPED = REPO / "deploy" / "mosquitto"
PASSWORDS = {"gw-a": "pw-a-3f9c", "gw-b": "pw-b-71d2", "cloud": "pw-cloud-0e4b"}


@dataclass
class Pki:
    """PEM files: ``ca``, ``server``, a client cert/key per name, and an unrelated ``rogue_ca``."""

    dir: Path
    ca: Path = Path()
    server_cert: Path = Path()
    server_key: Path = Path()
    rogue_ca: Path = Path()
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    rogue_clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


def make_pki(d: Path, clients: tuple[str, ...] = ("gw-a", "gw-b")) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, client certificates (CN = name)."""
    if not HAVE_CRYPTO:
        _missing("cryptography is not installed (pip install -e '.[dev]')")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    d.mkdir(parents=True, exist_ok=True)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(path: Path, cert: x509.Certificate, k: ec.EllipticCurvePrivateKey | None = None) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            path.with_suffix(".key").write_bytes(k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption()))
        return path

    def builder(subject: str, issuer: x509.Name, k: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                .public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = ec.generate_private_key(ec.SECP256R1())
        b = (builder(cn, name(cn), k)
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True))
        return k, b.sign(k, hashes.SHA256())

    def leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str,
             server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = ec.generate_private_key(ec.SECP256R1())
        b = (builder(cn, ca_cert.subject, k)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    pki = Pki(d)
    ca_key, ca_cert = ca("edgevib test CA")
    pki.ca = write(d / "ca.crt", ca_cert)
    sk, sc = leaf(ca_key, ca_cert, "localhost", True)
    pki.server_cert, pki.server_key = write(d / "server.crt", sc, sk), d / "server.key"
    for cn in clients:
        ck, cc = leaf(ca_key, ca_cert, cn, False)
        pki.clients[cn] = (write(d / f"{cn}.crt", cc, ck), d / f"{cn}.key")
    rogue_key, rogue_cert = ca("rogue CA")
    pki.rogue_ca = write(d / "rogue-ca.crt", rogue_cert)
    rk, rc = leaf(rogue_key, rogue_cert, "gw-a", False)
    pki.rogue_clients["gw-a"] = (write(d / "rogue-gw-a.crt", rc, rk), d / "rogue-gw-a.key")
    for p in d.iterdir():
        p.chmod(0o644)  # mosquitto started as root reads them as the `mosquitto` user
    d.chmod(0o755)
    return pki


def passwd_exe() -> str:
    exe = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None)
    if exe is None:
        _missing("mosquitto_passwd not found (apt-get install mosquitto)")
        raise AssertionError("unreachable")
    return exe


@dataclass
class SecureBroker:
    """The running broker: ``tls`` (password + ACL), ``mtls`` (client certificate), ``internal``."""

    proc: MosquittoProcess
    pki: Pki
    tls: int
    mtls: int
    internal: int
    dir: Path

    def url(self, listener: str, scheme: str = "mqtts") -> str:
        return f"{scheme}://127.0.0.1:{getattr(self, listener)}"

    def log(self) -> str:
        return (self.proc.conf.parent / "mosquitto.log").read_text(errors="replace")


def render_conf(text: str, d: Path, ports: dict[int, int]) -> str:
    """The shipped config with local ports, temporary paths, no persistence, log to stderr."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"listener (\d+)", line.strip())
        if m:
            line = f"listener {ports[int(m.group(1))]} 127.0.0.1"
        elif line.startswith("persistence"):
            continue
        elif line.startswith("log_dest"):
            line = "log_dest stderr"  # MosquittoProcess keeps stderr in its log file
        line = line.replace("/mosquitto/config/", f"{d}/").replace("/mosquitto/certs/", f"{d}/certs/")
        out.append(line)
    return "\n".join(out) + "\npersistence false\n"


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBroker]:
    """deploy/mosquitto/{mosquitto.conf, acl, acl.internal} on a real Mosquitto."""
    # Mosquitto started as root drops to the `mosquitto` user before it reads the password
    # file, ACL and certificates: they live in a world-readable directory (test secrets only).
    d = Path(tempfile.mkdtemp(prefix="edgevib-secure-broker-"))
    d.chmod(0o755)
    pki = make_pki(d / "certs")
    for name in ("acl", "acl.internal"):
        shutil.copy(SHIPPED / name, d / name)
    exe = passwd_exe()
    for i, (user, pw) in enumerate(PASSWORDS.items()):
        subprocess.run([exe, *(["-c"] if i == 0 else []), "-b", str(d / "passwd"), user, pw],
                       check=True, capture_output=True)
    for p in d.iterdir():
        if p.is_file():
            p.chmod(0o644)
    try:
        proc = MosquittoProcess()
    except Exception as exc:  # no mosquitto binary
        _missing(str(exc))
        raise
    ports = {8883: proc.port, 8884: free_port(), 1883: free_port()}
    proc.conf.write_text(render_conf((SHIPPED / "mosquitto.conf").read_text(), d, ports))
    proc.start()  # waits for the first listener (8883 -> proc.port)
    b = SecureBroker(proc, pki, ports[8883], ports[8884], ports[1883], d)
    try:
        yield b
    finally:
        proc.stop()
        shutil.rmtree(d, ignore_errors=True)
