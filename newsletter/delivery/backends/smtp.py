"""The SMTP backend: one connection reused across messages, STARTTLS / TLS / none, login.

Each message is its own SMTP transaction (MAIL, RCPT, DATA). What a failure means depends on
where it happened: a connection dropped before the message body was sent is surely not a delivery,
so the backend reconnects and sends that message again; a drop after the body went out, while
waiting for the server's answer, may have been a delivery, so it is reported `unknown`.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from pathlib import Path

from ...config import Environment, Settings
from ...errors import (
    AuthenticationError,
    ConfigError,
    DeliveryError,
    OutcomeUnknown,
    PayloadRejected,
    SendRefused,
    TemporaryFailure,
)
from ..batch import Batch, BatchResult
from ..message import batch_messages
from .base import BaseBackend

RECONNECTS_PER_MESSAGE = 2  # a server that drops us again at once is down: retry the batch later


class _Dropped(Exception):
    """The connection went away; `body_sent` says whether the message may have been taken."""

    def __init__(self, body_sent: bool, detail: str):
        super().__init__(detail)
        self.body_sent = body_sent


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and checks its host name against
    `delivery.smtp.host`: against the CAs in `ca_file` only when it is set, else the system's."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError:
        raise ConfigError(f"delivery.smtp.ca_file: {ca_file} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(
            f"delivery.smtp.ca_file: {ca_file} holds no usable CA certificate (PEM): {reason}"
        ) from None


class SmtpBackend(BaseBackend):
    name = "smtp"
    requires_secret = True
    max_batch = 1000

    def __init__(
        self,
        settings: Settings,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        environment: Environment | None = None,
    ):
        self.settings = settings
        self.config = settings.delivery.smtp
        self.max_batch = settings.delivery.batch_size
        if password is None:
            password = (environment or Environment.read()).smtp_password
        self.password = password
        if self.config.username and not self.password:
            raise DeliveryError(
                f"SMTP_PASSWORD is not set: the SMTP server {self.config.host} needs a password "
                f"for user {self.config.username}"
            )
        self.ssl_context = ssl_context or tls_context(self.config.ca_file)
        self.conn: smtplib.SMTP | None = None
        self.connections = 0  # how many times we connected (tests check the reuse)

    def clone(self) -> SmtpBackend:
        """Another connection to the same relay (`delivery.smtp.connections` of them at most)."""
        return SmtpBackend(self.settings, password=self.password, ssl_context=self.ssl_context)

    # Connection ------------------------------------------------------------------------------

    def open(self) -> None:
        self._connection()

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        where = f"{c.host}:{c.port}"
        try:
            if c.security == "tls":
                conn = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self.ssl_context)
            else:
                conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            conn.ehlo()
            if c.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise SendRefused(f"the SMTP server {where} does not offer STARTTLS")
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if c.username:
                conn.login(c.username, self.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise AuthenticationError(
                f"the SMTP server {where} refused the login of {c.username}: "
                f"{_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise AuthenticationError(
                f"the SMTP server {where} offers no login (AUTH); check the security setting"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            trust = f"the CAs in {c.ca_file}" if c.ca_file else "the system's CAs"
            hint = "" if c.ca_file else "; for a private CA, set delivery.smtp.ca_file"
            raise SendRefused(
                f"TLS with the SMTP server {where} failed: its certificate did not verify "
                f"({exc.verify_message.rstrip('.')}; checked against {trust}){hint}"
            ) from None
        except ssl.SSLError as exc:
            raise SendRefused(f"TLS with the SMTP server {where} failed: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            # Nothing was sent on a connection that never got ready.
            raise TemporaryFailure(f"cannot connect to the SMTP server {where}: {exc}") from None
        self.connections += 1
        return conn

    def _connection(self) -> smtplib.SMTP:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.conn.quit()
            self._drop()

    # Sending ---------------------------------------------------------------------------------

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        sender = self.settings.sender.email
        result.in_flight = []
        for key, recipient, msg, data in batch_messages(self.settings, batch, result):
            result.in_flight = [key]
            for attempt in range(RECONNECTS_PER_MESSAGE + 1):
                conn = self._connection()
                try:
                    outcome = self._transaction(conn, sender, recipient.email, data)
                except _Dropped as drop:
                    self._drop()
                    if drop.body_sent:
                        raise OutcomeUnknown(
                            f"the SMTP server closed the connection after receiving the message "
                            f"to {recipient.email}, before confirming it ({drop})",
                            recipients=[key],
                        ) from None
                    if attempt == RECONNECTS_PER_MESSAGE:
                        raise TemporaryFailure(
                            f"the SMTP server keeps closing the connection ({drop})"
                        ) from None
                    continue  # surely not taken: reconnect and send it again
                except BaseException:
                    # Interrupted mid-transaction: the connection's state is unknown; never
                    # reuse it, nor wait on it for a QUIT.
                    self._drop()
                    raise
                break
            kind, detail = outcome
            if kind == "sent":
                result.sent[key] = msg["Message-ID"]
            else:
                result.failed[key] = detail
            result.in_flight = []

    def send_message(self, to: str, data: bytes) -> str:
        """One message outside the send loop (the signup form's emails): the server's reply.
        Raises as `deliver` does; SendRefused when the server refuses the recipient."""
        try:
            kind, detail = self._transaction(
                self._connection(), self.settings.sender.email, to, data
            )
        except _Dropped as drop:
            self._drop()
            if drop.body_sent:
                raise OutcomeUnknown(
                    f"the SMTP server closed the connection before confirming the message ({drop})"
                ) from None
            raise TemporaryFailure(f"the SMTP server closed the connection ({drop})") from None
        if kind != "sent":
            raise SendRefused(detail)
        return detail

    def _transaction(self, conn: smtplib.SMTP, sender: str, to: str, data: bytes):
        """One message; ('sent', reply) or ('failed', reason) for this recipient, or raises."""
        body_sent = False
        try:
            code, resp = conn.mail(sender)
            if code != 250:
                self._reset(conn)
                if 400 <= code < 500:
                    raise TemporaryFailure(
                        f"the SMTP server deferred the sender: {_reply(code, resp)}"
                    )
                raise AuthenticationError(
                    f"the SMTP server refused the sender {sender}: {_reply(code, resp)}"
                )
            code, resp = conn.rcpt(to)
            if code not in (250, 251):
                self._reset(conn)
                if 400 <= code < 500:
                    raise TemporaryFailure(f"the SMTP server deferred {to}: {_reply(code, resp)}")
                return "failed", f"refused by the SMTP server: {_reply(code, resp)}"
            conn.putcmd("data")
            code, resp = conn.getreply()
            if code != 354:
                self._reset(conn)
                if 400 <= code < 500:
                    raise TemporaryFailure(f"the SMTP server deferred DATA: {_reply(code, resp)}")
                raise PayloadRejected(f"the SMTP server refused DATA: {_reply(code, resp)}")
            # As smtplib.SMTP.data does, but noting the moment the whole body has gone out.
            payload = smtplib._quote_periods(data)  # smtplib's own dot-stuffing
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            conn.send(payload + b".\r\n")
            body_sent = True
            code, resp = conn.getreply()
        except smtplib.SMTPServerDisconnected as exc:
            raise _Dropped(body_sent, str(exc) or "connection closed") from None
        except (OSError, smtplib.SMTPResponseException) as exc:
            # A socket error (reset, timeout) is a drop too: before the body, surely not taken.
            raise _Dropped(body_sent, str(exc) or type(exc).__name__) from None
        if code == 250:
            return "sent", _reply(code, resp)
        if 400 <= code < 500:
            raise TemporaryFailure(f"the SMTP server deferred the message: {_reply(code, resp)}")
        raise PayloadRejected(f"the SMTP server refused the message: {_reply(code, resp)}")

    @staticmethod
    def _reset(conn: smtplib.SMTP) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            conn.rset()
