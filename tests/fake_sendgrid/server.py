"""The HTTP side of the fake: a threaded server on 127.0.0.1 and its routes.

* ``POST /v3/mail/send``: a scripted behaviour if one is queued, else authenticated, validated
  (`validation.validate_mail_send`), and recorded in the state;
* ``POST /v3/mail/batch``, ``GET /v3/mail/batch/{id}``;
* ``GET /v3/suppression/{kind}``: the query checked against the spec's parameters, then a page;
* ``/_fake/...``: the control operations (`controls.OPERATIONS`), health and shutdown.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .controls import OPERATIONS
from .spec import suppression_query
from .state import DEFAULT_HANG_SECONDS, SUPPRESSION_KINDS, FakeSendGridError, ServerState
from .validation import validate_mail_send

LOOPBACK = "127.0.0.1"
MAX_SUPPRESSION_PAGE = 500  # the default page size when the query gives no limit

UNAUTHORIZED_MESSAGE = "The provided authorization grant is invalid, expired, or revoked"
AUTH_REQUIRED_MESSAGE = "authorization required"
FORBIDDEN_MESSAGE = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until this "
    "error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
    "sender-identity/ to see the Sender Identity requirements"
)

_ERROR_MESSAGES = {
    400: "Bad Request",
    401: AUTH_REQUIRED_MESSAGE,
    403: "access forbidden",
    404: "resource not found",
    405: "method not allowed",
    408: "request timeout",
    413: "content too large",
    415: "unsupported media type",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}

_BATCH_PATH = re.compile(r"/v3/mail/batch/([^/]+)")
_SUPPRESSION_PATH = re.compile(r"/v3/suppression/(" + "|".join(SUPPRESSION_KINDS) + r")")


def _error_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"field": field, "message": message}]}


def _full_error_body(message: str, field: str | None = None, help: Any = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": help}]}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def _is_sandbox(payload: dict[str, Any]) -> bool:
    settings = payload.get("mail_settings")
    if not isinstance(settings, dict):
        return False
    sandbox = settings.get("sandbox_mode")
    return isinstance(sandbox, dict) and sandbox.get("enable") is True


def _declared_length(headers) -> int:
    """The request's Content-Length, or 0 (a body too large to keep was drained unread)."""
    try:
        return max(0, int(headers.get("Content-Length") or 0))
    except ValueError:
        return 0


class _BodyError(Exception):
    """The request body could not be read (the connection is closed without a response)."""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    request_queue_size = 128  # the default backlog of 5 drops SYNs under concurrent senders

    def __init__(self, port: int, state: ServerState, on_shutdown) -> None:
        self.state = state
        self.on_shutdown = on_shutdown
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self._stop_requested = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.busy = 0  # requests being handled right now
        self.busy_cond = threading.Condition()
        super().__init__((LOOPBACK, port), _Handler)

    def serve(self) -> None:
        """Accept connections until stop_serving(); event driven (no poll interval)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop_requested:
                for key, _ in selector.select():
                    if self._stop_requested:
                        break
                    if key.fileobj is self:
                        self._handle_request_noblock()

    def stop_serving(self) -> None:
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def wait_until_idle(self, timeout: float) -> None:
        """Let requests in progress (woken hangs and long polls) finish their answers."""
        with self.busy_cond:
            self.busy_cond.wait_for(lambda: self.busy == 0, timeout)

    def close_all_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: Server

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def state(self) -> ServerState:
        return self.server.state

    def _read_body(self) -> tuple[bytes, bool]:
        """Read the whole request body; return (body, too_large).  Over-limit bodies are drained
        and discarded so the client sees a proper answer instead of a broken pipe."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", False
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError("bad Content-Length") from None
        if length < 0:
            raise _BodyError("bad Content-Length")
        if length >= self.state.max_body_bytes:
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise _BodyError("client went away")
                remaining -= len(chunk)
            return b"", True
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BodyError("client went away")
        return body, False

    def _read_chunked(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _BodyError("client went away")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError("bad chunk") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = self.rfile.read(size)
            if len(data) != size:
                raise _BodyError("client went away")
            self.rfile.readline(3)
            total += size
            if total < self.state.max_body_bytes:
                parts.append(data)
        if total >= self.state.max_body_bytes:
            return b"", True
        return b"".join(parts), False

    def _decode_body(self, body: bytes) -> tuple[bytes | None, int | None]:
        """Undo Content-Encoding: gzip.  Returns (body, None) or (None, error status)."""
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if not encoding or encoding == "identity":
            return body, None
        if encoding != "gzip":
            return None, 415
        limit = self.state.max_body_bytes
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(body, limit)  # no more than the limit, however small
        except zlib.error:
            return None, 400  # not gzip, or corrupt
        if len(data) >= limit:
            return None, 413  # the JSON inside is held to the limit, not the compressed bytes
        if not decompressor.eof:
            return None, 400  # cut short
        return data, None

    def _send(
        self,
        status: int,
        body: Any = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            content_type = "application/json" if data else None
        elif isinstance(body, str):
            data = body.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        names = {k.lower() for k in (headers or {})}
        if content_type and "content-type" not in names:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _abort(self, rst: bool = False) -> None:
        """Close the connection without sending a response."""
        self.close_connection = True
        if rst:
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        with contextlib.suppress(OSError):
            self.connection.close()

    def _authorized(self) -> tuple[bool, dict[str, Any] | None]:
        header = self.headers.get("Authorization")
        if header is None:
            return False, _full_error_body(AUTH_REQUIRED_MESSAGE)
        parts = header.split(None, 1)
        key, _ = self.state.key_and_mode()
        if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip() == key:
            return True, None
        return False, _full_error_body(UNAUTHORIZED_MESSAGE)

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self.server.busy_cond:
            self.server.busy += 1
        try:
            self._route()
        finally:
            with self.server.busy_cond:
                self.server.busy -= 1
                self.server.busy_cond.notify_all()

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        method = self.command
        if path == "/v3/mail/send" and method == "POST":
            self._mail_send()
            return
        try:
            body, too_large = self._read_body()
        except _BodyError:
            self._abort()
            return
        if path.startswith("/_fake/"):
            self._control(method, path[len("/_fake/") :], body, too_large)
        elif path == "/v3/mail/send":
            self._send(405, _error_body("method not allowed"))
        elif path == "/v3/mail/batch":
            if method != "POST":
                self._send(405, _error_body("method not allowed"))
            else:
                self._batch_create()
        elif (match := _BATCH_PATH.fullmatch(path)) is not None:
            if method != "GET":
                self._send(405, _error_body("method not allowed"))
            else:
                self._batch_get(urllib.parse.unquote(match.group(1)))
        elif (match := _SUPPRESSION_PATH.fullmatch(path)) is not None:
            if method != "GET":
                self._send(405, _error_body("method not allowed"))
            else:
                self._suppressions(match.group(1), query)
        else:
            self._send(404, _error_body("resource not found"))

    # -- /v3/mail/send ---------------------------------------------------------------------

    def _mail_send(self) -> None:
        state = self.state
        state.note_request()
        started = time.monotonic()
        body = b""
        noted = False

        def note_answer(status: int | None) -> None:
            # Noted before the answer is written: once the client has it, the log holds it.
            nonlocal noted
            if not noted:
                noted = True
                size = len(body) or _declared_length(self.headers)
                state.note_answered(started, status, size)

        try:
            try:
                body, too_large = self._read_body()
            except _BodyError:
                self._abort()
                return
            entry = state.pop_script()
            if entry is None or "status" in entry:
                # A provider's pace: the answer comes after the latency (and the upload time at
                # the bandwidth); each connection has its own thread, so holds overlap.
                state.hold(state.pace_seconds(len(body)))
            if entry is None:
                status, response, payload = self._evaluate_mail_send(body, too_large)
                note_answer(status)
                self._answer_mail_send(status, response, payload)
            elif "status" in entry:
                status = entry["status"]
                response = entry.get("body")
                if response is None:
                    response = _error_body(_ERROR_MESSAGES.get(status, _phrase(status)))
                state.note_response(status)
                note_answer(status)
                self._send(status, response, entry.get("headers"))
            else:
                if entry.get("accept"):
                    status, _response, payload = self._evaluate_mail_send(body, too_large)
                    if status == 202 and payload is not None:
                        state.record_accepted(payload)
                if entry.get("hang"):
                    self._hang(float(entry.get("seconds", DEFAULT_HANG_SECONDS)))
                    self._abort()
                else:
                    state.note_dropped()
                    self._abort(rst=bool(entry.get("reset")))
        finally:
            note_answer(None)  # closed without an answer (a hang, a drop, a broken body)
            state.note_completed()

    def _evaluate_mail_send(
        self, body: bytes, too_large: bool
    ) -> tuple[int, Any, dict[str, Any] | None]:
        ok, unauthorized = self._authorized()
        if not ok:
            return 401, unauthorized, None
        if too_large:
            return 413, _error_body("content too large"), None
        decoded, problem = self._decode_body(body)
        if decoded is None:
            return problem, _error_body(_ERROR_MESSAGES[problem]), None
        try:
            payload = json.loads(decoded)
        except (ValueError, UnicodeDecodeError):
            return 400, _full_error_body("Bad Request"), None
        _, forbidden = self.state.key_and_mode()
        errors = validate_mail_send(payload, self.state.known_batch_ids())
        if errors:
            return 400, {"errors": errors}, None
        if forbidden:
            return 403, _full_error_body(FORBIDDEN_MESSAGE, "from"), None
        if _is_sandbox(payload):
            return 200, b"", None
        return 202, b"", payload

    def _answer_mail_send(self, status: int, response: Any, payload: dict[str, Any] | None):
        headers = {}
        if status == 202 and payload is not None:
            headers["X-Message-Id"] = self.state.record_accepted(payload)
        self.state.note_response(status)
        self._send(status, response, headers)

    def _hang(self, seconds: float) -> None:
        """Hold the request until the client disconnects, release() or ``seconds`` pass."""
        wake_r, wake_w = socket.socketpair()
        try:
            if not self.state.register_hang(wake_w):
                return
            try:
                deadline = time.monotonic() + seconds
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    readable, _, _ = select.select([self.connection, wake_r], [], [], remaining)
                    if not readable or wake_r in readable:
                        return
                    try:
                        if not self.connection.recv(65536):
                            return  # the client went away
                    except OSError:
                        return
            finally:
                self.state.unregister_hang(wake_w)
        finally:
            wake_r.close()
            wake_w.close()

    # -- /v3/mail/batch --------------------------------------------------------------------

    def _batch_create(self) -> None:
        ok, unauthorized = self._authorized()
        if not ok:
            self._send(401, unauthorized)
            return
        self._send(201, {"batch_id": self.state.new_batch()})

    def _batch_get(self, batch_id: str) -> None:
        ok, unauthorized = self._authorized()
        if not ok:
            self._send(401, unauthorized)
            return
        if batch_id in self.state.known_batch_ids():
            self._send(200, {"batch_id": batch_id})
        else:
            # The spec lists 400 "invalid batch id", not 404, for an unknown batch id.
            self._send(400, _error_body("invalid batch id"))

    # -- /v3/suppression/* -----------------------------------------------------------------

    def _suppressions(self, kind: str, query: dict[str, list[str]]) -> None:
        flat = {key: values[-1] for key, values in query.items()}
        ok, unauthorized = self._authorized()
        status = 200 if ok else 401
        response: Any = unauthorized
        if ok:
            problem = self._query_problem(kind, flat)
            if problem is None:
                response = self._suppression_page(kind, flat)
            else:
                status, response = 400, _error_body(*problem)
        self.state.note_suppression_request(kind, flat, status)
        self._send(status, response)

    @staticmethod
    def _typed_query(kind: str, query: dict[str, str]) -> dict[str, Any]:
        """The query with the spec's integer parameters as ints when they read as ints."""
        integers, _ = suppression_query(kind)
        typed: dict[str, Any] = dict(query)
        for name in integers & typed.keys():
            with contextlib.suppress(ValueError):
                typed[name] = int(typed[name])
        return typed

    def _query_problem(self, kind: str, query: dict[str, str]) -> tuple[str, str] | None:
        """(message, parameter) for the first parameter the spec refuses, or None."""
        _, validator = suppression_query(kind)
        for error in validator.iter_errors(self._typed_query(kind, query)):
            name = str(error.instance_path[0]) if error.instance_path else None
            return f"{name}: {error.message}", name
        return None

    def _suppression_page(self, kind: str, query: dict[str, str]) -> list[dict[str, Any]]:
        typed = self._typed_query(kind, query)
        start, end = typed.get("start_time"), typed.get("end_time")
        limit = typed.get("limit", MAX_SUPPRESSION_PAGE)
        offset = typed.get("offset", 0)
        pattern = None
        if query.get("email"):
            # The email parameter is a prefix; "%" is a wildcard.
            parts = [re.escape(p) for p in query["email"].split("%")]
            pattern = re.compile(".*".join(parts), re.IGNORECASE)
        selected = [
            dict(e)
            for e in self.state.suppression_list(kind)
            if (start is None or e["created"] >= start)
            and (end is None or e["created"] <= end)
            and (pattern is None or pattern.match(e["email"]))
        ]
        return selected[offset : offset + limit]

    # -- /_fake/* --------------------------------------------------------------------------

    def _control(self, method: str, name: str, body: bytes, too_large: bool) -> None:
        """``POST /_fake/<operation>`` with a JSON object of keyword arguments; answers
        ``{"result": ...}``.  Also ``GET /_fake/health`` and ``POST /_fake/shutdown``."""
        if method == "GET" and name == "health":
            self._send(200, {"ok": True, "record": self.state.record})
            return
        if method == "POST" and name == "shutdown":
            self._send(200, {"ok": True}, {"Connection": "close"})
            self.server.on_shutdown()
            return
        if method != "POST" or name not in OPERATIONS:
            self._send(404, {"error": f"unknown control endpoint {method} /_fake/{name}"})
            return
        try:
            if too_large:
                raise FakeSendGridError("control request too large")
            arguments = json.loads(body) if body else {}
            if not isinstance(arguments, dict):
                raise FakeSendGridError("control bodies must be JSON objects")
            result = getattr(self.state, name)(**arguments)
        except FakeSendGridError as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": f"bad control request: {exc}"})
            return
        self._send(200, {"result": result})
