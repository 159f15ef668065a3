"""SMTP trust: `delivery.smtp.ca_file` against a local aiosmtpd server with TLS (STARTTLS and
implicit TLS) whose certificate comes from a test CA made here with `cryptography`.

With the CA file the send goes through; without it, with another CA, or with a certificate for
another host name, the send stops at once with a one-line error and leaves everyone pending.
"""
# Not both_engines: SMTP trust settings (the send through the ledger: test_backend_smtp).

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import ssl
from contextlib import contextmanager
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from newsletter.delivery.message import list_id
from newsletter.store import ledger as store
from tests.support.delivery import ISSUE, configure, database, free_port
from tests.support.smtp import Recorder

EXAMPLE_ELIGIBLE = 20  # subscribers.example.csv: 25 rows, 5 not on the list


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class PrivateCA:
    """A certificate authority of our own, as a company's mail relay would have."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = folder / f"{name}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server's TLS context with a certificate from this CA for `names` (DNS or IP)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        alt = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = self.folder / f"server-{names[0]}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> PrivateCA:
    return PrivateCA(tmp_path_factory.mktemp("pki"), "relay-ca")


@contextmanager
def tls_server(security: str, context: ssl.SSLContext):
    """aiosmtpd on 127.0.0.1: STARTTLS required before MAIL, or TLS from the first byte."""
    handler = Recorder()
    port = free_port()
    if security == "starttls":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def no_system_override(monkeypatch):
    """No SSL_CERT_FILE/SSL_CERT_DIR from the environment: only what the settings say counts."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def send_example(run, workspace, **smtp):
    """`newsletter send` of the example issue to the example subscribers through SMTP."""
    settings = configure(workspace, backend="smtp", smtp={"timeout": 10, **smtp})
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    return settings, run("send", ISSUE, "--yes")


@pytest.mark.usefixtures("no_system_override")
@pytest.mark.parametrize(
    ("security", "host"), [("starttls", "localhost"), ("tls", "127.0.0.1")]
)  # fmt: skip
def test_with_ca_file_the_send_goes_through(run, workspace, ca, security, host):
    # The CA file sits beside the settings and is named relative to them.
    (workspace / "certs").mkdir()
    (workspace / "certs" / "relay-ca.pem").write_bytes(ca.pem.read_bytes())
    with tls_server(security, ca.server_context("localhost", "127.0.0.1")) as (handler, port):
        settings, result = send_example(
            run, workspace, host=host, port=port, security=security, ca_file="certs/relay-ca.pem"
        )
    assert result.exit_code == 0, result.stderr
    assert settings.delivery.smtp.ca_file == workspace / "certs" / "relay-ca.pem"
    db = database(settings)
    assert store.counts(db, ISSUE) == {"sent": EXAMPLE_ELIGIBLE}
    assert len(handler.messages) == EXAMPLE_ELIGIBLE
    assert len(set(handler.addresses())) == EXAMPLE_ELIGIBLE
    for _, data in handler.messages:
        assert email.message_from_bytes(data, policy=policy.default)["List-Id"] == list_id(settings)


def assert_stopped_with_everyone_pending(settings, handler, result, *expected: str):
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for part in expected:
        assert part in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert handler.messages == []
    db = database(settings)
    assert store.counts(db, ISSUE) == {"pending": EXAMPLE_ELIGIBLE}


@pytest.mark.usefixtures("no_system_override")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_without_ca_file_an_untrusted_certificate_stops_the_send(run, workspace, ca, security):
    with tls_server(security, ca.server_context("localhost", "127.0.0.1")) as (handler, port):
        settings, result = send_example(
            run, workspace, host="127.0.0.1", port=port, security=security
        )
    assert_stopped_with_everyone_pending(
        settings,
        handler,
        result,
        f"TLS with the SMTP server 127.0.0.1:{port} failed",
        "certificate",
        "set delivery.smtp.ca_file",
    )


@pytest.mark.usefixtures("no_system_override")
def test_ca_file_trusts_that_ca_only(run, workspace, ca, tmp_path):
    other = PrivateCA(tmp_path, "another-ca")
    with tls_server("starttls", ca.server_context("localhost", "127.0.0.1")) as (handler, port):
        settings, result = send_example(
            run, workspace, host="127.0.0.1", port=port, ca_file=str(other.pem)
        )
    assert_stopped_with_everyone_pending(
        settings, handler, result, "certificate did not verify", str(other.pem)
    )


@pytest.mark.usefixtures("no_system_override")
def test_the_host_name_is_checked(run, workspace, ca):
    # A certificate from the trusted CA, but for another host than the one we connect to.
    with tls_server("starttls", ca.server_context("mail.example.test")) as (handler, port):
        settings, result = send_example(
            run, workspace, host="localhost", port=port, ca_file=str(ca.pem)
        )
    assert_stopped_with_everyone_pending(
        settings, handler, result, "Hostname mismatch", "not valid for 'localhost'"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), (b"not a certificate\n", "holds no usable CA certificate")],
)
def test_a_missing_or_unreadable_ca_file_is_one_line_naming_the_setting(
    run, workspace, content, expected
):
    if content is not None:
        (workspace / "ca.pem").write_bytes(content)
    settings, result = send_example(
        run, workspace, host="127.0.0.1", port=free_port(), ca_file="ca.pem"
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: delivery.smtp.ca_file: ")
    assert str(workspace / "ca.pem") in errors[0] and expected in errors[0]
    db = database(settings)
    assert set(store.counts(db, ISSUE)) <= {"pending"}  # nobody sent, nobody lost
