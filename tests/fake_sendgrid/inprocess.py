"""`FakeSendGrid`: the fake served from a background thread of the test's own process."""

from __future__ import annotations

import threading
from typing import Any

from .controls import Controls
from .process import FakeSendGridControl
from .server import LOOPBACK, Server
from .spec import mail_send_validator
from .state import TEST_API_KEY, FakeSendGridError, ServerState


class FakeSendGrid(Controls):
    """The fake SendGrid API served from a background thread of this process."""

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = TEST_API_KEY,
        record: str = "full",
        latency_ms: float = 0.0,
        bandwidth: float | None = None,
        on_shutdown=None,
    ) -> None:
        """`latency_ms`: each mail send is answered that long after it came (plus its upload
        time at `bandwidth` bytes a second, when given)."""
        self._state = ServerState(api_key, record, latency_ms=latency_ms, bandwidth=bandwidth)
        self._port = port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._on_shutdown = on_shutdown
        self._lock = threading.Lock()

    def _control(self, operation: str, **arguments: Any) -> Any:
        return getattr(self._state, operation)(**arguments)

    # lifecycle
    def start(self) -> FakeSendGrid:
        with self._lock:
            if self._server is not None:
                return self
            # Compile the schema now: a missing spec fails here, and the first send is not slow.
            mail_send_validator()
            self._state.stopping = False
            self._server = Server(self._port, self._state, self._shutdown_requested)
            self._thread = threading.Thread(
                target=self._server.serve,
                name=f"fake-sendgrid-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            self._state.begin_stop()
            server.stop_serving()
            if thread is not None:
                thread.join(timeout=10)
            server.wait_until_idle(timeout=5)
            server.close_all_connections()
            server.server_close()

    def _shutdown_requested(self) -> None:
        callback = self._on_shutdown or self.stop
        threading.Thread(target=callback, daemon=True).start()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise FakeSendGridError("the fake SendGrid server is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_key(self) -> str:
        return self._state.configured_api_key

    @property
    def record(self) -> str:
        return self._state.record

    @property
    def control(self) -> FakeSendGridControl:
        """An HTTP control client for this server (exercises the /_fake/ endpoints)."""
        return FakeSendGridControl(self.url)
