"""A local fake of the parts of SendGrid's v3 Web API that the newsletter uses.

It listens on 127.0.0.1 only, checks every mail send against SendGrid's official OpenAPI schema
(`openapi/`, with its licence) plus the documented limits the schema does not hold, and answers
like SendGrid. It runs in-process::

    with FakeSendGrid() as fake:
        client = sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=fake.url)
        ...
        assert fake.stats()["accepted_recipients"] == 3

or as a separate process (for end-to-end runs and benchmarks)::

    python -m tests.fake_sendgrid --port 0 [--record full|recipients|counts] [--api-key KEY]
        [--latency MS] [--bandwidth BYTES_PER_S]

which prints one line ``READY http://127.0.0.1:PORT``; from Python use
``start_fake_sendgrid_process()``. Both are driven through the same control methods
(`controls.Controls`): script, release, wait_for, accepted, recipients, stats, reset,
set_suppressions, suppression_requests, set_mode, send_times.

With ``--latency MS`` (``latency_ms=`` in Python, or ``set_mode(latency_ms=...)``) each mail
send is answered MS milliseconds after it came, plus its upload time at ``--bandwidth`` bytes a
second when given: a real provider's pace. Every connection has its own thread, so requests
in flight together are held together (``wait_for("in_flight", n=2)`` sees both; ``release()``
lets them go at once), and ``send_times()`` says when each came and was answered, and its
size. ``set_mode(max_body_bytes=N)`` lowers the 30,000,000-byte limit on a body (the JSON, once
a gzipped body is decompressed), so that a test sees a body split without building 30 MB.

Endpoints served (auth: ``Authorization: Bearer <api key>``):

* ``POST /v3/mail/send`` - validated like SendGrid (400 with every problem listed), 401/403/413,
  202 with ``X-Message-Id`` on success (200 without recording in sandbox mode). A body with
  ``Content-Encoding: gzip`` is decompressed first (a corrupt one: 400); the 30 MB limit
  applies to the JSON inside.
* ``POST /v3/mail/batch`` - 201 ``{"batch_id": ...}``; ``GET /v3/mail/batch/{id}`` - 200 or 400
  ``invalid batch id`` (the spec lists 400, not 404, for an unknown batch id on this GET).
* ``GET /v3/suppression/{unsubscribes,bounces,spam_reports,invalid_emails,blocks}`` with
  ``start_time``, ``end_time``, ``limit``, ``offset`` (checked against the spec's parameters)
  and ``email`` (prefix, ``%`` wildcard).
* anything else: 404 ``{"errors":[{"field":null,"message":"resource not found"}]}``.

Control endpoints (no auth): ``POST /_fake/<operation>`` with a JSON object of the method's
keyword arguments, answered ``{"result": ...}`` (400/409 ``{"error": ...}`` on misuse);
``GET /_fake/health``; ``POST /_fake/shutdown`` (ends a separate process).

Scripted behaviours (``script()``), consumed one per ``POST /v3/mail/send`` in order, before
any authentication or validation:

* ``{"status": 429, "headers": {"Retry-After": "1"}, "body": ...}`` - answer with that status
  (400..599); ``body`` defaults to SendGrid-style error JSON for the status; not accepted.
* ``{"hang": true, "accept": false, "seconds": 30}`` - read the body, then hold the response
  until the client disconnects, ``release()`` is called or ``seconds`` pass; then close the
  connection without answering.
* ``{"drop": true, "accept": false, "reset": false}`` - read the body, then close the connection
  without any response (``reset: true`` sends a TCP RST instead of a FIN).
* With ``"accept": true`` a hang/drop request that would otherwise have been accepted (auth and
  validation pass) is recorded as accepted - SendGrid took it but the answer was lost.

Modules: `state` (what a server remembers), `spec` (the OpenAPI files and validators built from
them), `validation` (the mail-send verdict), `server` (HTTP and routes), `controls` (the control
interface), `inprocess` and `process` (the two ways to run it), `__main__` (the command line).
"""

from .controls import Controls
from .inprocess import FakeSendGrid
from .process import FakeSendGridControl, FakeSendGridProcess, start_fake_sendgrid_process
from .server import (
    AUTH_REQUIRED_MESSAGE,
    FORBIDDEN_MESSAGE,
    LOOPBACK,
    UNAUTHORIZED_MESSAGE,
)
from .spec import default_spec_dir, load_mail_send_schema
from .state import (
    MAX_BODY_BYTES,
    RECORD_MODES,
    SUPPRESSION_KINDS,
    TEST_API_KEY,
    WAIT_EVENTS,
    FakeSendGridError,
)
from .validation import validate_mail_send

__all__ = [
    "AUTH_REQUIRED_MESSAGE",
    "FORBIDDEN_MESSAGE",
    "LOOPBACK",
    "MAX_BODY_BYTES",
    "RECORD_MODES",
    "SUPPRESSION_KINDS",
    "TEST_API_KEY",
    "UNAUTHORIZED_MESSAGE",
    "WAIT_EVENTS",
    "Controls",
    "FakeSendGrid",
    "FakeSendGridControl",
    "FakeSendGridError",
    "FakeSendGridProcess",
    "default_spec_dir",
    "load_mail_send_schema",
    "start_fake_sendgrid_process",
    "validate_mail_send",
]
