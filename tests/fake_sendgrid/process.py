"""The fake in a separate process, and the HTTP control client that drives any fake server.

`start_fake_sendgrid_process()` runs ``python -m tests.fake_sendgrid`` (see `__main__`), waits
for its ``READY <url>`` line and returns a `FakeSendGridProcess`: a `FakeSendGridControl` that
also owns the child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from .controls import Controls
from .state import RECORD_MODES, TEST_API_KEY, FakeSendGridError

# `python -m tests.fake_sendgrid` runs from the repository's root, whatever the caller's folder.
REPOSITORY = Path(__file__).resolve().parents[2]


def _check_loopback(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the fake SendGrid control client only talks to loopback: {url!r}")
    return url.rstrip("/")


class FakeSendGridControl(Controls):
    """Controls a fake server (in this process or another) through its /_fake/ endpoints."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = _check_loopback(url)
        self.timeout = timeout
        # An empty ProxyHandler: never route loopback traffic through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, name: str, body: dict[str, Any] | None, timeout: float):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_fake/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")
            raise FakeSendGridError(f"{method} /_fake/{name}: {exc.code} {message}") from None
        return json.loads(raw) if raw else None

    def _control(self, operation: str, **arguments: Any) -> Any:
        # A long poll (wait_for) may hold the answer for its own timeout: wait that much longer.
        timeout = self.timeout + float(arguments.get("timeout") or 0)
        return self._request("POST", operation, arguments, timeout)["result"]

    def health(self) -> dict[str, Any]:
        return self._request("GET", "health", None, self.timeout)

    def shutdown(self) -> None:
        """Ask the server to stop (ends a separate fake process)."""
        self._request("POST", "shutdown", {}, self.timeout)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class FakeSendGridProcess(FakeSendGridControl):
    """A fake server running in a child process; has every FakeSendGridControl method."""

    def __init__(self, process: subprocess.Popen, url: str) -> None:
        super().__init__(url)
        self.process = process
        self._finalizer = weakref.finalize(self, _terminate, process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM the process, wait for it (kill after 10 s); return its exit code."""
        self._finalizer()
        return self.process.returncode

    def __enter__(self) -> FakeSendGridProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _read_line(stream, timeout: float) -> bytes:
    """Read one line from a pipe without blocking past ``timeout`` seconds."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def start_fake_sendgrid_process(
    record: str = "full",
    api_key: str = TEST_API_KEY,
    *,
    port: int = 0,
    timeout: float = 10.0,
    latency_ms: float = 0.0,
    bandwidth: float | None = None,
) -> FakeSendGridProcess:
    """Start ``python -m tests.fake_sendgrid`` and wait (up to ``timeout``) for its READY line.
    `latency_ms` and `bandwidth` are its ``--latency`` and ``--bandwidth``.

    The child exits when stopped, on SIGTERM/SIGINT, or when this process dies (its stdin
    pipe closes).
    """
    if record not in RECORD_MODES:
        raise ValueError(f"record must be one of {RECORD_MODES}, got {record!r}")
    command = [
        sys.executable,
        "-m",
        "tests.fake_sendgrid",
        "--port",
        str(port),
        "--record",
        record,
        "--api-key",
        api_key,
        "--exit-on-stdin-eof",
        "--latency",
        str(latency_ms),
    ]
    if bandwidth is not None:
        command += ["--bandwidth", str(bandwidth)]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPOSITORY
    )
    line = _read_line(process.stdout, timeout)
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("READY http://"):
        _terminate(process)
        raise RuntimeError(f"fake SendGrid process did not become ready: {text!r}")
    return FakeSendGridProcess(process, text.split(" ", 1)[1])
