"""Everything one fake SendGrid server remembers: counters, accepted messages, the script of
failures to play, suppression lists, batch ids, modes (key, forbidden, latency, bandwidth), when
each mail send came and was answered; and the control operations on it.

One condition variable guards it all, so a test thread can wait (`wait_for`) while the server's
request threads change it.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import socket
import string
import threading
import time
from collections import deque
from typing import Any

TEST_API_KEY = "SG.test-key"
RECORD_MODES = ("full", "recipients", "counts")
SUPPRESSION_KINDS = ("unsubscribes", "bounces", "spam_reports", "invalid_emails", "blocks")
WAIT_EVENTS = ("in_flight", "requests", "accepted", "completed")

# "The total size of your email, including attachments, must be less than 30MB" (Mail Send
# limitations), in decimal megabytes: a body of this many bytes or more is refused (413).
MAX_BODY_BYTES = 30_000_000
DEFAULT_HANG_SECONDS = 30.0
MAX_WAIT_SECONDS = 300.0


class FakeSendGridError(Exception):
    """Misuse of the fake's control API (bad script entry, unavailable record, ...).

    `status` is what the HTTP control endpoint answers with: 400, or 409 for a record that this
    server's record mode does not keep."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What SendGrid returns beside `created` and `email` on each suppression list, with the value a
# seeded entry gets when the test does not give one.
_SUPPRESSION_FIELDS: dict[str, dict[str, Any]] = {
    "unsubscribes": {},
    "bounces": {"reason": "550 5.1.1 The email account does not exist.", "status": "5.1.1"},
    "spam_reports": {"ip": "127.0.0.1"},
    "invalid_emails": {"reason": "Mail domain mentioned in email address is unknown"},
    "blocks": {"reason": "550 5.7.1 Message rejected by the receiving server.", "status": "5.7.1"},
}

_SCRIPT_KEYS = {
    "status": {"status", "headers", "body"},
    "hang": {"hang", "accept", "seconds"},
    "drop": {"drop", "accept", "reset"},
}


def _check_script_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise FakeSendGridError(f"script entries must be objects, got {entry!r}")
    kinds = [k for k in ("status", "hang", "drop") if k in entry]
    if len(kinds) != 1:
        raise FakeSendGridError(f"a script entry needs exactly one of status/hang/drop: {entry!r}")
    kind = kinds[0]
    unknown = set(entry) - _SCRIPT_KEYS[kind]
    if unknown:
        raise FakeSendGridError(f"unknown keys {sorted(unknown)} in {kind} entry {entry!r}")
    if kind == "status":
        if not is_int(entry["status"]) or not 400 <= entry["status"] <= 599:
            raise FakeSendGridError(f"status must be an int in 400..599: {entry!r}")
        headers = entry.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise FakeSendGridError(f"headers must map strings to strings: {entry!r}")
    else:
        if entry[kind] is not True:
            raise FakeSendGridError(f"{kind} must be true: {entry!r}")
        if not isinstance(entry.get("accept", False), bool):
            raise FakeSendGridError(f"accept must be a boolean: {entry!r}")
        seconds = entry.get("seconds", DEFAULT_HANG_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise FakeSendGridError(f"seconds must be a non-negative number: {entry!r}")
        if not isinstance(entry.get("reset", False), bool):
            raise FakeSendGridError(f"reset must be a boolean: {entry!r}")
    return copy.deepcopy(entry)


def _check_pace(latency_ms: Any, bandwidth: Any) -> None:
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or latency_ms < 0:
        raise FakeSendGridError(f"latency_ms must be a non-negative number, got {latency_ms!r}")
    if bandwidth is not None and (
        isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or bandwidth <= 0
    ):
        raise FakeSendGridError(f"bandwidth must be a positive number (bytes/s), got {bandwidth!r}")


def _new_message_id() -> str:
    return secrets.token_urlsafe(16)


def _new_batch_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


class ServerState:
    """All mutable state of one fake server, guarded by one condition variable."""

    def __init__(
        self,
        api_key: str,
        record: str,
        *,
        latency_ms: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        if record not in RECORD_MODES:
            raise ValueError(f"record must be one of {RECORD_MODES}, got {record!r}")
        _check_pace(latency_ms, bandwidth)
        self.cond = threading.Condition()
        self.configured_api_key = api_key
        self.configured_pace = (float(latency_ms), bandwidth)
        self.record = record
        self.stopping = False
        self.hang_wakers: set[socket.socket] = set()
        with self.cond:
            self._reset_locked()

    def _reset_locked(self) -> None:
        self.api_key = self.configured_api_key
        self.forbidden = False
        self.latency_ms, self.bandwidth = self.configured_pace
        self.max_body_bytes = MAX_BODY_BYTES
        self.release_generation = 0  # release() bumps it: every held request is let go
        self.send_log: list[dict[str, Any]] = []  # per mail send: times, status, size
        self.script_queue: deque[dict[str, Any]] = deque()
        self.requests = 0
        self.completed = 0
        self.accepted_requests = 0
        self.accepted_recipients = 0
        self.responses: dict[int, int] = {}
        self.hung = 0
        self.dropped = 0
        self.in_flight = 0
        self.accepted_log: list[dict[str, Any]] = []
        self.recipient_log: list[str] = []
        self.suppressions: dict[str, list[dict[str, Any]]] = {k: [] for k in SUPPRESSION_KINDS}
        self.suppression_log: list[dict[str, Any]] = []
        self.batch_ids: set[str] = set()
        self._wake_hangs_locked()
        self.cond.notify_all()

    def _wake_hangs_locked(self) -> None:
        for waker in list(self.hang_wakers):
            with contextlib.suppress(OSError):
                waker.send(b"x")

    # -- used by the request handler -------------------------------------------------------

    def key_and_mode(self) -> tuple[str, bool]:
        """The API key in force, and whether mail sends are forbidden."""
        with self.cond:
            return self.api_key, self.forbidden

    def known_batch_ids(self) -> set[str]:
        with self.cond:
            return set(self.batch_ids)

    def new_batch(self) -> str:
        batch_id = _new_batch_id()
        with self.cond:
            self.batch_ids.add(batch_id)
        return batch_id

    def suppression_list(self, kind: str) -> list[dict[str, Any]]:
        with self.cond:
            return list(self.suppressions[kind])

    def note_suppression_request(self, kind: str, query: dict[str, str], status: int) -> None:
        with self.cond:
            self.suppression_log.append(
                {"kind": kind, "path": f"/v3/suppression/{kind}", "query": query, "status": status}
            )

    def note_request(self) -> None:
        with self.cond:
            self.requests += 1
            self.cond.notify_all()

    def note_completed(self) -> None:
        with self.cond:
            self.completed += 1
            self.cond.notify_all()

    def note_response(self, status: int) -> None:
        with self.cond:
            self.responses[status] = self.responses.get(status, 0) + 1

    def pop_script(self) -> dict[str, Any] | None:
        with self.cond:
            return self.script_queue.popleft() if self.script_queue else None

    def record_accepted(self, payload: dict[str, Any]) -> str:
        message_id = _new_message_id()
        recipients = [
            item["email"].lower()
            for pers in payload["personalizations"]
            for item in pers.get("to", [])
        ]
        with self.cond:
            self.accepted_requests += 1
            self.accepted_recipients += len(recipients)
            if self.record == "full":
                self.accepted_log.append(
                    {"x_message_id": message_id, "recipients": recipients, "payload": payload}
                )
            elif self.record == "recipients":
                self.accepted_log.append({"x_message_id": message_id, "recipients": recipients})
            if self.record != "counts":
                self.recipient_log.extend(recipients)
            self.cond.notify_all()
        return message_id

    def register_hang(self, waker: socket.socket) -> bool:
        with self.cond:
            self.hung += 1
            if self.stopping:
                return False
            self.hang_wakers.add(waker)
            self.in_flight += 1
            self.cond.notify_all()
            return True

    def unregister_hang(self, waker: socket.socket) -> None:
        with self.cond:
            self.hang_wakers.discard(waker)
            self.in_flight -= 1
            self.cond.notify_all()

    def note_dropped(self) -> None:
        with self.cond:
            self.dropped += 1

    def pace_seconds(self, body_bytes: int) -> float:
        """How long a mail send of `body_bytes` is held before its answer: the latency, plus
        the upload time at the bandwidth (each request has the bandwidth to itself)."""
        with self.cond:
            seconds = self.latency_ms / 1000
            if self.bandwidth:
                seconds += body_bytes / self.bandwidth
            return seconds

    def hold(self, seconds: float) -> None:
        """Hold a request for `seconds`, counted `in_flight`; release() or stopping ends it
        early. Requests on other connections are held at the same time (a thread each)."""
        if seconds <= 0:
            return
        with self.cond:
            generation = self.release_generation
            self.in_flight += 1
            self.cond.notify_all()
            try:
                self.cond.wait_for(
                    lambda: self.release_generation != generation or self.stopping, seconds
                )
            finally:
                self.in_flight -= 1
                self.cond.notify_all()

    def note_answered(self, started: float, status: int | None, size: int) -> None:
        """A mail send of `size` bytes (as sent, maybe gzipped) that came at `started`
        (time.monotonic) is answered now (status None: closed without an answer)."""
        answered = time.monotonic()
        entry = {"started": started, "answered": answered, "status": status, "bytes": size}
        with self.cond:
            self.send_log.append(entry)

    def begin_stop(self) -> None:
        with self.cond:
            self.stopping = True
            self._wake_hangs_locked()
            self.cond.notify_all()

    # -- the control operations (see controls.Controls for what each one means) ---------------

    def script(self, responses: list[dict[str, Any]]) -> None:
        if not isinstance(responses, list):
            raise FakeSendGridError("responses must be a list of script entries")
        entries = [_check_script_entry(entry) for entry in responses]
        with self.cond:
            self.script_queue.extend(entries)

    def release(self) -> None:
        with self.cond:
            self._wake_hangs_locked()
            self.release_generation += 1
            self.cond.notify_all()

    def wait_for(self, event: str, timeout: float = 10.0, n: int | None = None) -> bool:
        if event not in WAIT_EVENTS:
            raise FakeSendGridError(f"event must be one of {WAIT_EVENTS}, got {event!r}")
        if n is None:
            n = 1
        if not is_int(n) or n < 0:
            raise FakeSendGridError(f"n must be a non-negative integer, got {n!r}")
        timeout = max(0.0, min(float(timeout), MAX_WAIT_SECONDS))

        def reached() -> bool:
            value = {
                "in_flight": self.in_flight,
                "requests": self.requests,
                "accepted": self.accepted_requests,
                "completed": self.completed,
            }[event]
            return value >= n

        with self.cond:
            self.cond.wait_for(lambda: reached() or self.stopping, timeout)
            return reached()

    def accepted(self) -> list[dict[str, Any]]:
        with self.cond:
            if self.record == "counts":
                raise FakeSendGridError("accepted() is not available with record='counts'", 409)
            return copy.deepcopy(self.accepted_log)

    def recipients(self) -> list[str]:
        with self.cond:
            if self.record == "counts":
                raise FakeSendGridError("recipients() is not available with record='counts'", 409)
            return list(self.recipient_log)

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {
                "requests": self.requests,
                "accepted_requests": self.accepted_requests,
                "accepted_recipients": self.accepted_recipients,
                "responses": dict(sorted(self.responses.items())),
                "hung": self.hung,
                "dropped": self.dropped,
                "in_flight": self.in_flight,
                "completed": self.completed,
                "record": self.record,
            }

    def reset(self) -> None:
        with self.cond:
            self._reset_locked()

    def set_suppressions(self, kind: str, entries: list[dict[str, Any]]) -> None:
        if kind not in SUPPRESSION_KINDS:
            raise FakeSendGridError(f"kind must be one of {SUPPRESSION_KINDS}, got {kind!r}")
        if not isinstance(entries, list):
            raise FakeSendGridError("entries must be a list of objects")
        defaults = _SUPPRESSION_FIELDS[kind]
        allowed = {"email", "created", *defaults}
        cleaned = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise FakeSendGridError(f"suppression entries must be objects: {entry!r}")
            unknown = set(entry) - allowed
            if unknown:
                raise FakeSendGridError(f"unknown fields {sorted(unknown)} for {kind}: {entry!r}")
            if not isinstance(entry.get("email"), str) or not is_int(entry.get("created")):
                raise FakeSendGridError(f"entries need email (str) and created (int): {entry!r}")
            for key, value in entry.items():
                if key not in ("email", "created") and not isinstance(value, str):
                    raise FakeSendGridError(f"{key} must be a string: {entry!r}")
            item = {"created": entry["created"], "email": entry["email"]}
            for key, default in defaults.items():
                item[key] = entry.get(key, default)
            cleaned.append(item)
        # SendGrid lists oldest first.
        cleaned.sort(key=lambda e: (e["created"], e["email"]))
        with self.cond:
            self.suppressions[kind] = cleaned

    def suppression_requests(self) -> list[dict[str, Any]]:
        with self.cond:
            return copy.deepcopy(self.suppression_log)

    def set_mode(
        self,
        forbidden: bool | None = None,
        api_key: str | None = None,
        latency_ms: float | None = None,
        bandwidth: float | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        if max_body_bytes is not None and (not is_int(max_body_bytes) or max_body_bytes < 1):
            raise FakeSendGridError(
                f"max_body_bytes must be a positive integer: {max_body_bytes!r}"
            )
        if forbidden is not None and not isinstance(forbidden, bool):
            raise FakeSendGridError("forbidden must be a boolean")
        if api_key is not None and not isinstance(api_key, str):
            raise FakeSendGridError("api_key must be a string")
        _check_pace(0 if latency_ms is None else latency_ms, bandwidth)
        with self.cond:
            if forbidden is not None:
                self.forbidden = forbidden
            if api_key is not None:
                self.api_key = api_key
            if latency_ms is not None:
                self.latency_ms = float(latency_ms)
            if bandwidth is not None:
                self.bandwidth = bandwidth
            if max_body_bytes is not None:
                self.max_body_bytes = max_body_bytes

    def send_times(self) -> list[dict[str, Any]]:
        with self.cond:
            return [dict(entry) for entry in self.send_log]
