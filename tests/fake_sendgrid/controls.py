"""The control operations a test has on a fake server, written once.

`FakeSendGrid` (in this process) and `FakeSendGridControl` (over HTTP, also the base of
`FakeSendGridProcess`) both derive from `Controls` and supply one method,
``_control(operation, **arguments)``: the in-process one calls the server's state directly, the
HTTP one posts the arguments to ``/_fake/<operation>``, which calls the same state method.
"""

from __future__ import annotations

from typing import Any


class Controls:
    """What a test can ask of a fake server, wherever it runs."""

    def _control(self, operation: str, **arguments: Any) -> Any:
        raise NotImplementedError

    def script(self, responses: list[dict[str, Any]]) -> None:
        """Queue behaviours for the next /v3/mail/send requests (one each, in order)."""
        self._control("script", responses=responses)

    def release(self) -> None:
        """Release every request currently held by a scripted hang or by the latency."""
        self._control("release")

    def wait_for(self, event: str, timeout: float = 10.0, n: int | None = None) -> bool:
        """Block until ``event`` count >= n (default 1); False on timeout."""
        return bool(self._control("wait_for", event=event, timeout=timeout, n=n))

    def accepted(self) -> list[dict[str, Any]]:
        """Accepted sends: ``{"x_message_id", "recipients", "payload"}`` (no payload unless
        record='full'); raises FakeSendGridError with record='counts'."""
        return self._control("accepted")

    def recipients(self) -> list[str]:
        """Every accepted ``to`` address, lowercased, in order of acceptance."""
        return self._control("recipients")

    def stats(self) -> dict[str, Any]:
        """Counters; ``responses`` maps int status codes to counts."""
        stats = self._control("stats")
        # JSON keys are strings: make the status codes ints again after a trip over HTTP.
        stats["responses"] = {int(k): v for k, v in stats["responses"].items()}
        return stats

    def reset(self) -> None:
        """Forget everything: records, counters, script, suppressions, batches, modes."""
        self._control("reset")

    def set_suppressions(self, kind: str, entries: list[dict[str, Any]]) -> None:
        """Replace a suppression list; see SUPPRESSION_KINDS."""
        self._control("set_suppressions", kind=kind, entries=entries)

    def suppression_requests(self) -> list[dict[str, Any]]:
        """``{"kind", "path", "query", "status"}`` for each suppression-list GET."""
        return self._control("suppression_requests")

    def set_mode(
        self,
        forbidden: bool | None = None,
        api_key: str | None = None,
        latency_ms: float | None = None,
        bandwidth: float | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        """``forbidden=True``: mail sends get 403 (unverified sender); ``api_key``: change key;
        ``latency_ms``: hold each mail send that long before answering; ``bandwidth``: bytes a
        second of each request's upload, added to the hold; ``max_body_bytes``: a lower size
        limit than SendGrid's 30 MB (413 from that size on), so that a test sees a body split
        without building 30 MB. None leaves a mode as it is; reset() restores them all."""
        self._control(
            "set_mode",
            forbidden=forbidden,
            api_key=api_key,
            latency_ms=latency_ms,
            bandwidth=bandwidth,
            max_body_bytes=max_body_bytes,
        )

    def send_times(self) -> list[dict[str, Any]]:
        """Each mail send in the order answered: ``{"started", "answered", "status", "bytes"}``:
        the server's ``time.monotonic()`` when its handling began and when it was answered (so
        a test sees which requests overlapped), the status (None: closed without an answer) and
        the body's size as sent (gzipped, if it was)."""
        return self._control("send_times")


# The names of the control operations: the public methods above, which are also methods of
# `state.ServerState` and the HTTP endpoints ``POST /_fake/<name>``.
OPERATIONS = frozenset(name for name in vars(Controls) if not name.startswith("_"))
