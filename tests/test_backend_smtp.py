"""The SMTP backend against a real SMTP server (aiosmtpd) on 127.0.0.1: one connection reused,
STARTTLS / TLS / none, login, reconnect on a drop without sending anyone twice."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from newsletter.delivery import RetryPolicy, send_issue
from newsletter.delivery.backends.smtp import SmtpBackend
from newsletter.errors import AuthenticationError, DeliveryError
from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.support.delivery import (
    ISSUE,
    add_many,
    check_deliveries,
    configure,
    database,
    duplicates,
    free_port,
    parse,
)
from tests.support.smtp import Recorder

pytestmark = pytest.mark.both_engines

QUICK = RetryPolicy(max_attempts=3, base=0.0, maximum=0.0)


@pytest.fixture
def smtp(workspace, monkeypatch):
    """A running SMTP server (plain, no TLS) and settings pointing at it."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings = configure(
        workspace,
        backend="smtp",
        batch_size=3,
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5},
    )
    yield handler, settings
    controller.stop()


def people(db, n_all=4):
    insert(db, "women@example.org", name="Wanda", topics=["womens-health"])
    insert(db, "gone@example.org", topics="all", status="unsubscribed")
    add_many(db, n_all)


def send(settings, db, backend, **kw):
    return send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=lambda s: None, **kw)


def test_example_issue_to_example_subscribers_over_smtp(run, smtp, workspace):
    handler, settings = smtp
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    db = database(settings)
    check_deliveries(settings, db, handler.received())
    assert store.counts(db, ISSUE) == {"sent": len(handler.messages)}
    assert handler.ehlos == 1  # one connection for every message
    report = run("report", ISSUE, "--list", "sent")
    assert sorted(report.output.split()) == sorted(handler.addresses())
    msg = parse(handler.messages[0][1])
    assert msg["List-Unsubscribe"].startswith("<https://") and msg["Message-ID"]


def test_a_drop_before_the_message_reconnects_and_nobody_gets_two(smtp):
    handler, settings = smtp
    db = database(settings)
    people(db)
    handler.drop_at_mail = {2}  # the server hangs up when the second message starts

    backend = SmtpBackend(settings)
    result = send(settings, db, backend)

    assert result.report.state == "sent"
    assert duplicates(handler.addresses()) == []
    assert len(handler.addresses()) == 5
    assert backend.connections == 2


def test_a_drop_after_the_message_is_unknown_never_resent_unless_asked(smtp):
    handler, settings = smtp
    db = database(settings)
    people(db)
    handler.drop_after_data = {2}  # second message received, its answer lost

    with pytest.raises(DeliveryError, match="after receiving the message"):
        send(settings, db, SmtpBackend(settings))
    counts = store.counts(db, ISSUE)
    assert counts["unknown"] == 1 and counts["sent"] == 1
    [unknown] = [e.email for e in store.iter_entries(db, ISSUE, state="unknown")]
    assert unknown in handler.addresses()  # it did arrive: which is why we never resend it

    send(settings, db, SmtpBackend(settings))  # resume
    assert duplicates(handler.addresses()) == []
    assert len(handler.addresses()) == 5
    assert store.counts(db, ISSUE) == {"sent": 4, "unknown": 1}

    send(
        settings, db, SmtpBackend(settings), retry_unknown=True, retry_unknown_now=True
    )  # the editor's explicit choice
    assert handler.addresses().count(unknown) == 2
    assert store.counts(db, ISSUE) == {"sent": 5}


def test_a_refused_recipient_fails_alone_and_a_deferred_one_is_retried(smtp):
    handler, settings = smtp
    db = database(settings)
    people(db)
    handler.rcpt_replies = {
        "user1@example.org": "550 5.1.1 no such user",
        "user2@example.org": "451 4.3.0 try again later",
    }

    result = send(settings, db, SmtpBackend(settings))

    entry = next(store.iter_entries(db, ISSUE, state="failed"))
    assert entry.email == "user1@example.org" and "550 5.1.1 no such user" in entry.reason
    assert handler.addresses().count("user2@example.org") == 1
    assert duplicates(handler.addresses()) == []
    assert result.report.counts == {"sent": 4, "failed": 1}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_with_smtp_password(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    handler = Recorder()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"news" and auth_data.password == b"right"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=authenticator,
        auth_required=True, auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    try:
        settings = configure(
            workspace,
            batch_size=3,
            smtp={
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "username": "news",
                "timeout": 5,
            },  # fmt: skip
        )
        db = database(settings)
        people(db, n_all=2)

        monkeypatch.delenv("SMTP_PASSWORD", raising=False)
        with pytest.raises(DeliveryError, match="SMTP_PASSWORD is not set"):
            SmtpBackend(settings)

        monkeypatch.setenv("SMTP_PASSWORD", "wrong")
        with pytest.raises(AuthenticationError, match="refused the login of news"):
            send(settings, db, SmtpBackend(settings))
        assert handler.messages == []
        assert store.counts(db, ISSUE) == {"pending": 3}

        monkeypatch.setenv("SMTP_PASSWORD", "right")
        assert send(settings, db, SmtpBackend(settings)).report.state == "sent"
        assert len(handler.messages) == 3
    finally:
        controller.stop()


def _certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, and a client context that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_tls(workspace, monkeypatch, tmp_path, security):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    server_ctx, client_ctx = _certificate(tmp_path)
    handler = Recorder()
    port = free_port()
    if security == "starttls":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=server_ctx,
            require_starttls=True,
        )  # fmt: skip
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_ctx)
    controller.start()
    try:
        settings = configure(
            workspace, smtp={"host": "127.0.0.1", "port": port, "security": security}
        )
        db = database(settings)
        people(db, n_all=2)
        # Without trusting the test certificate, TLS fails and nothing is sent.
        with pytest.raises(DeliveryError, match="TLS"):
            send(settings, db, SmtpBackend(settings))
        assert store.counts(db, ISSUE) == {"pending": 3}

        backend = SmtpBackend(settings, ssl_context=client_ctx)
        assert send(settings, db, backend).report.state == "sent"
        assert len(handler.messages) == 3 and backend.connections == 1
    finally:
        controller.stop()


def test_no_server_is_retried_then_the_send_stops_with_everyone_pending(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    settings = configure(
        workspace, smtp={"host": "127.0.0.1", "port": free_port(), "security": "none"}
    )
    db = database(settings)
    people(db, n_all=1)
    sleeps = []
    with pytest.raises(
        DeliveryError, match="gave up after 3 attempts to reach the smtp backend: cannot connect"
    ):
        send_issue(
            settings, db, ISSUE, backend=SmtpBackend(settings), retry=QUICK, sleep=sleeps.append
        )
    assert len(sleeps) == 2
    assert store.counts(db, ISSUE) == {"pending": 2}
