"""`appwarden serve --tls-cert/--tls-key`: osquery speaks TLS only, so the server can too. A real
server started by the test, with a certificate of a CA made here, answers an osquery enroll over
HTTPS to a client that trusts only that CA (as osqueryd's --tls_server_certs pins it)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.proxy_harness import free_port, stop_process, wait_until_listening

from appwarden.cli.main import run

SECRET = "enroll-secret-of-the-fleet-0123"
HOST_DETAILS = {"system_info": {"uuid": "4C4C4544-0042-3510-8051-B7C04F4E3732"}}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost: (ca, cert, key)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("appwarden test CA"))
        .issuer_name(_name("appwarden test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


@pytest.fixture
def database(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "appwarden.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def tls_server(tmp_path: Path, database: str) -> Iterator[tuple[int, Path]]:
    """`appwarden serve --tls-cert --tls-key` in a child process: (port, the CA file)."""
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "APPWARDEN_OSQUERY_ENROLL_SECRET": SECRET,
        "APPWARDEN_ENV": "test",
    }
    command = [sys.executable, "-m", "appwarden", "--db", database, "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if not wait_until_listening(process, port):
            stop_process(process)
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"appwarden serve did not start:\n{output}")
        yield port, ca
    finally:
        stop_process(process)


def test_an_osquery_enroll_over_https_with_the_ca_pinned(tls_server):
    port, ca = tls_server
    pinned = ssl.create_default_context(cafile=str(ca))
    pinned.minimum_version = ssl.TLSVersion.TLSv1_2
    pinned.maximum_version = ssl.TLSVersion.TLSv1_2  # what osqueryd's client speaks
    body = {"enroll_secret": SECRET, "host_identifier": "jdoe-mbp", "host_details": HOST_DETAILS}
    with httpx.Client(verify=pinned, timeout=10) as client:
        response = client.post(f"https://127.0.0.1:{port}/osquery/enroll", json=body)
        assert response.status_code == 200, response.text
        node_key = response.json()["node_key"]
        assert len(node_key) >= 40
        config = client.post(
            f"https://localhost:{port}/osquery/config", json={"node_key": node_key}
        )
        assert config.json()["node_invalid"] is False
    # A client that does not trust that CA refuses the server; plain HTTP gets no answer.
    with httpx.Client(timeout=10) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.post(f"https://127.0.0.1:{port}/osquery/enroll", json=body)
    with httpx.Client(timeout=10) as plain, pytest.raises(httpx.HTTPError):
        plain.post(f"http://127.0.0.1:{port}/osquery/enroll", json=body)


def test_tls_options_are_checked_before_serving(tmp_path, database, capsys):
    _, cert, key = make_certificates(tmp_path)
    other_key = tmp_path / "other-key.pem"
    other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    for args, said in (
        (["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        (["--tls-key", str(key)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "cannot be used"),
        (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)], "cannot be used"),
    ):
        assert run(["--db", database, "serve", *args]) == 2
        assert said in capsys.readouterr().err
