"""HTTPS to KPIggybank and CouchDB verifies certificates: a self-signed server is refused unless
its certificate authority is given in KPI_CA_BUNDLE."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kpi.couch import AGGREGATES, CouchStore, StoreError
from kpi.devserver import free_port
from kpi.settings import Settings
from kpi.source import KpiggybankClient, SourceError


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by its own key; (certificate path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kpi test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class Handler(http.server.BaseHTTPRequestHandler):
    """Enough of KPIggybank (an empty range) and CouchDB (every database exists)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b"[]" if self.path.startswith("/wsapi/") else b'{}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def https_server(cert: str, key: str, port: int = 0):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(tmp_path):
    cert, key = self_signed(tmp_path)
    with https_server(cert, key) as url:
        yield url, cert


def settings_for(url: str, ca_bundle: str = "") -> Settings:
    return Settings(source_url=f"{url}/wsapi/interaction_data", couchdb_url=url,
                    retry_attempts=1, retry_backoff=0.01, http_timeout=5, ca_bundle=ca_bundle)


def test_kpiggybank_over_https_verifies_the_certificate(server):
    url, cert = server
    with KpiggybankClient(settings_for(url)) as client, pytest.raises(SourceError) as caught:
        client.fetch_window(0, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    with KpiggybankClient(settings_for(url, ca_bundle=cert)) as client:
        assert client.fetch_window(0, 1) == []


def test_couchdb_over_https_verifies_the_certificate(server):
    url, cert = server
    with pytest.raises(StoreError) as caught:
        CouchStore(settings_for(url)).require_databases((AGGREGATES,))
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) or "certificate" in str(
        caught.value).lower()
    CouchStore(settings_for(url, ca_bundle=cert)).require_databases((AGGREGATES,))


def test_couchdb_keeps_verifying_after_the_first_requests(tmp_path):
    """A man in the middle after a few trusted requests (here: another server with another
    certificate on the same address) is refused: every request verifies, not only the first."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert_a, key_a = self_signed(tmp_path / "a")
    cert_b, key_b = self_signed(tmp_path / "b")
    port = free_port()
    with https_server(cert_a, key_a, port) as url:
        store = CouchStore(settings_for(url, ca_bundle=cert_a))
        for _ in range(3):
            store.require_databases((AGGREGATES,))
    with https_server(cert_b, key_b, port), pytest.raises(StoreError) as caught:
        store.require_databases((AGGREGATES,))
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
