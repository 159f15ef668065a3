"""Tests of the fake SendGrid API, driven by the real `sendgrid` client."""
# Not both_engines: the SendGrid stand-in itself, no database.

from __future__ import annotations

import copy
import gzip
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sendgrid
from python_http_client.exceptions import HTTPError
from sendgrid.helpers.mail import (
    Asm,
    Category,
    Content,
    CustomArg,
    Header,
    Mail,
    Personalization,
    ReplyTo,
    SendAt,
    To,
)

from tests.fake_sendgrid import (
    FORBIDDEN_MESSAGE,
    MAX_BODY_BYTES,
    TEST_API_KEY,
    UNAUTHORIZED_MESSAGE,
    FakeSendGrid,
    FakeSendGridControl,
    FakeSendGridError,
    default_spec_dir,
    load_mail_send_schema,
    start_fake_sendgrid_process,
    validate_mail_send,
)

MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{16,}")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    # The sendgrid client uses urllib, which honours proxy variables: keep 127.0.0.1 direct.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake():
    with FakeSendGrid() as server:
        yield server


def client_for(url: str, api_key: str | None = TEST_API_KEY, timeout: float = 5.0):
    client = sendgrid.SendGridAPIClient(api_key=api_key, host=url)
    client.client.timeout = timeout  # python_http_client.Client passes it to urlopen
    return client


@pytest.fixture
def sg(fake):
    return client_for(fake.url)


def make_mail(*to: str, subject: str = "MS research news, December") -> Mail:
    mail = Mail(
        from_email="news@example.org",
        to_emails=list(to or ["reader@example.com"]),
        subject=subject,
        plain_text_content="Plain text body",
        html_content="<p>HTML body</p>",
    )
    return mail


def base_payload() -> dict:
    return {
        "from": {"email": "news@example.org", "name": "MS Research News"},
        "subject": "December issue",
        "personalizations": [
            {"to": [{"email": "a@example.com"}, {"email": "b@example.com", "name": "Bea"}]}
        ],
        "content": [
            {"type": "text/plain", "value": "Hello"},
            {"type": "text/html", "value": "<p>Hello</p>"},
        ],
    }


def http_error(call) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        call()
    return info.value


def raw_request(url, method="POST", body=None, headers=None, timeout=5.0):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def run_in_thread(func):
    """Run func in a thread; return (thread, outcome) where outcome gets 'result'/'error'."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- success and recording ------------------------------------------------------------------


def test_send_is_accepted_with_message_id_and_recorded(fake, sg):
    mail = make_mail("Reader.One@Example.com", "reader.two@example.com")
    first = sg.send(mail)
    second = sg.send(make_mail("third@example.com"))

    assert first.status_code == 202
    assert first.body == b""
    assert first.headers["Content-Length"] == "0"
    ids = [first.headers["X-Message-Id"], second.headers["X-Message-Id"]]
    assert all(MESSAGE_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]

    accepted = fake.accepted()
    assert [a["x_message_id"] for a in accepted] == ids
    assert accepted[0]["payload"] == mail.get()
    assert accepted[0]["recipients"] == ["reader.one@example.com", "reader.two@example.com"]
    assert fake.recipients() == [
        "reader.one@example.com",
        "reader.two@example.com",
        "third@example.com",
    ]
    stats = fake.stats()
    assert stats["requests"] == 2
    assert stats["accepted_requests"] == 2
    assert stats["accepted_recipients"] == 3
    assert stats["responses"] == {202: 2}


def test_accepted_recipients_count_only_to_addresses(fake, sg):
    payload = base_payload()
    payload["personalizations"][0]["cc"] = [{"email": "cc@example.com"}]
    payload["personalizations"][0]["bcc"] = [{"email": "bcc@example.com"}]
    assert sg.send(payload).status_code == 202
    assert fake.stats()["accepted_recipients"] == 2
    assert fake.recipients() == ["a@example.com", "b@example.com"]


def test_keep_alive_connection_serves_several_requests(fake):
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    body = json.dumps(base_payload())
    headers = {"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"}
    try:
        for _ in range(3):
            connection.request("POST", "/v3/mail/send", body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == 202
            assert response.read() == b""
        connection.request("GET", "/nowhere", headers=headers)
        response = connection.getresponse()
        assert response.status == 404
        assert json.loads(response.read()) == {
            "errors": [{"field": None, "message": "resource not found"}]
        }
    finally:
        connection.close()
    assert fake.stats()["accepted_requests"] == 3


def test_concurrent_sends_are_all_recorded(fake):
    def send(i):
        return client_for(fake.url).send(make_mail(f"reader{i}@example.com"))

    threads = [run_in_thread(lambda i=i: send(i)) for i in range(16)]
    for thread, _ in threads:
        thread.join(10)
    ids = {outcome["result"].headers["X-Message-Id"] for _, outcome in threads}
    assert len(ids) == 16
    assert sorted(fake.recipients()) == sorted(f"reader{i}@example.com" for i in range(16))
    assert fake.stats()["responses"] == {202: 16}


def test_sandbox_mode_is_validated_but_not_recorded(fake, sg):
    payload = base_payload()
    payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    response = sg.send(payload)
    assert response.status_code == 200
    assert fake.accepted() == []
    assert fake.stats()["responses"] == {200: 1}


def test_gzip_body_is_accepted(fake):
    status, headers, _ = raw_request(
        f"{fake.url}/v3/mail/send",
        body=gzip.compress(json.dumps(base_payload()).encode()),
        headers={
            "Authorization": f"Bearer {TEST_API_KEY}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert status == 202 and "X-Message-Id" in headers
    assert fake.recipients() == ["a@example.com", "b@example.com"]


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", ["SG.wrong-key", None])
def test_wrong_or_missing_key_is_401(fake, monkeypatch, api_key):
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    error = http_error(lambda: client_for(fake.url, api_key=api_key).send(make_mail()))
    assert error.status_code == 401
    assert json.loads(error.body) == {
        "errors": [{"message": UNAUTHORIZED_MESSAGE, "field": None, "help": None}]
    }
    assert fake.stats()["responses"] == {401: 1}
    assert fake.stats()["requests"] == 1
    assert fake.accepted() == []


def test_no_authorization_header_is_401(fake):
    status, _, body = raw_request(
        f"{fake.url}/v3/mail/send", body=json.dumps(base_payload()).encode()
    )
    assert status == 401
    assert json.loads(body)["errors"][0]["message"] == "authorization required"


def test_api_key_can_be_changed(fake, sg):
    fake.set_mode(api_key="SG.other")
    assert http_error(lambda: sg.send(make_mail())).status_code == 401
    assert client_for(fake.url, api_key="SG.other").send(make_mail()).status_code == 202


def test_forbidden_mode_is_403(fake, sg):
    fake.set_mode(forbidden=True)
    error = http_error(lambda: sg.send(make_mail()))
    assert error.status_code == 403
    assert error.to_dict == {
        "errors": [{"message": FORBIDDEN_MESSAGE, "field": "from", "help": None}]
    }
    fake.set_mode(forbidden=False)
    assert sg.send(make_mail()).status_code == 202


# --- validation ------------------------------------------------------------------------------


def _set(path, value):
    def mutate(payload):
        *parents, last = path
        target = payload
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _delete(*path):
    def mutate(payload):
        *parents, last = path
        target = payload
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


def _many_personalizations(payload):
    payload["personalizations"] = [{"to": [{"email": f"r{i}@example.com"}]} for i in range(1001)]


def _too_many_recipients(payload):
    payload["personalizations"] = [
        {
            "to": [{"email": f"to{i}@example.com"} for i in range(600)],
            "cc": [{"email": f"cc{i}@example.com"} for i in range(401)],
        }
    ]


def _duplicate_across(payload):
    payload["personalizations"].append({"to": [{"email": "A@Example.com"}]})


def _duplicate_within(payload):
    payload["personalizations"][0]["cc"] = [{"email": "B@EXAMPLE.COM"}]


def _big_substitutions(payload):
    payload["personalizations"][0]["substitutions"] = {"-name-": "x" * 10_000}


VALIDATION_CASES = {
    "missing from": (_delete("from"), "from.email", "from object must be provided"),
    "invalid from": (_set(("from", "email"), "not-an-address"), "from.email", "valid address"),
    "missing subject": (_delete("subject"), "subject", "The subject is required"),
    "missing personalizations": (
        _delete("personalizations"),
        "personalizations",
        "at least one personalization",
    ),
    "empty personalizations": (
        _set(("personalizations",), []),
        "personalizations",
        "at least one personalization",
    ),
    "1001 personalizations": (
        _many_personalizations,
        "personalizations",
        "limited to 1000 personalizations",
    ),
    "1001 recipients": (_too_many_recipients, "personalizations", "limit of 1000 total"),
    "missing to": (
        _delete("personalizations", 0, "to"),
        "personalizations.0.to",
        "The to array is required for all personalization objects, and must have at least one "
        "email object with a valid email address.",
    ),
    "empty to": (
        _set(("personalizations", 0, "to"), []),
        "personalizations.0.to",
        "The to array is required",
    ),
    "invalid to": (
        _set(("personalizations", 0, "to", 0, "email"), "someone at example.com"),
        "personalizations.0.to.0.email",
        "valid address",
    ),
    "duplicate across personalizations": (
        _duplicate_across,
        "personalizations.1.to.0.email",
        "You have included [A@Example.com] more than once",
    ),
    "duplicate within personalization": (
        _duplicate_within,
        "personalizations.0",
        "unique between to, cc, and bcc",
    ),
    "comma in name": (
        _set(("personalizations", 0, "to", 1, "name"), "Smith, Bea"),
        "personalizations.0.to.1.name",
        "; or ,",
    ),
    "missing content": (_delete("content"), "content", "the content parameter is required"),
    "empty content value": (
        _set(("content", 1, "value"), ""),
        "content.1.value",
        "content value must be a string",
    ),
    "content without type": (
        _delete("content", 0, "type"),
        "content.0.type",
        "content type must be a string",
    ),
    "html before plain": (
        _set(
            ("content",),
            [{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}],
        ),
        "content.1.type",
        "text/plain must be first",
    ),
    "substitutions over 10000 bytes": (
        _big_substitutions,
        "personalizations.0.substitutions",
        "10000 bytes",
    ),
    "non-string custom_args": (
        _set(("custom_args",), {"issue": 12}),
        "custom_args.issue",
        "Expected: string, given: integer",
    ),
    "non-string personalization custom_args": (
        _set(("personalizations", 0, "custom_args"), {"subscriber": None}),
        "personalizations.0.custom_args.subscriber",
        "Expected: string, given: null",
    ),
    "string send_at": (
        _set(("send_at",), "1700000000"),
        "send_at",
        "Expected: integer, given: string",
    ),
    "send_at too far ahead": (_set(("send_at",), 4_102_444_800), "send_at", "72 hours"),
    "unknown batch_id": (_set(("batch_id",), "not-created-here"), "batch_id", "not a valid"),
    "11 categories": (
        _set(("categories",), [f"c{i}" for i in range(11)]),
        "categories",
        "Too many categories",
    ),
    "long category": (_set(("categories",), ["x" * 256]), "categories.0", "255 characters"),
    "non-string header": (
        _set(("headers",), {"X-Issue": 12}),
        "headers.X-Issue",
        "Expected: string",
    ),
    "reserved header": (
        _set(("headers",), {"Reply-To": "x@example.com"}),
        "headers.Reply-To",
        "reserved headers",
    ),
    "reserved personalization header": (
        _set(("personalizations", 0, "headers"), {"x-sg-id": "1"}),
        "personalizations.0.headers.x-sg-id",
        "reserved headers",
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_rule_gives_400(fake, sg, case):
    mutate, field, message = VALIDATION_CASES[case]
    payload = base_payload()
    mutate(payload)
    error = http_error(lambda: sg.send(payload))
    assert error.status_code == 400
    errors = json.loads(error.body)["errors"]
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert any(message in e["message"] for e in matching), matching
    assert set(errors[0]) == {"message", "field", "help"}
    assert fake.accepted() == []
    assert fake.stats()["responses"] == {400: 1}


def test_every_problem_is_listed(sg):
    payload = base_payload()
    del payload["from"]
    del payload["content"]
    payload["categories"] = ["x" * 300]
    error = http_error(lambda: sg.send(payload))
    fields = [e["field"] for e in error.to_dict["errors"]]
    assert fields == ["from.email", "content", "categories.0"]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_set(("personalizations", 0, "substitutions"), {"k": "v" * 9_999}), id="10k"),
        pytest.param(_delete("content"), id="template-without-content"),
        pytest.param(_delete("subject"), id="template-without-subject"),
    ],
)
def test_boundaries_and_template_sends_are_accepted(sg, mutate):
    payload = base_payload()
    payload["template_id"] = "d-0123456789abcdef"
    mutate(payload)
    assert sg.send(payload).status_code == 202


def test_subject_in_every_personalization_is_enough(sg):
    payload = base_payload()
    del payload["subject"]
    payload["personalizations"][0]["subject"] = "Per-recipient subject"
    assert sg.send(payload).status_code == 202
    payload["personalizations"].append({"to": [{"email": "c@example.com"}]})
    assert http_error(lambda: sg.send(payload)).status_code == 400


def test_exactly_1000_recipients_are_accepted(fake, sg):
    payload = base_payload()
    payload["personalizations"] = [{"to": [{"email": f"r{i}@example.com"}]} for i in range(1000)]
    assert sg.send(payload).status_code == 202
    assert fake.stats()["accepted_recipients"] == 1000


def test_body_that_is_not_json_is_400(fake):
    status, _, body = raw_request(
        f"{fake.url}/v3/mail/send",
        body=b"{not json",
        headers={"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"},
    )
    assert status == 400
    assert json.loads(body)["errors"][0]["field"] is None
    assert fake.stats()["responses"] == {400: 1}


def test_body_over_30_mb_is_413(fake, sg):
    payload = base_payload()
    payload["content"][0]["value"] = "x" * (MAX_BODY_BYTES + 1)
    error = http_error(lambda: sg.send(payload))
    assert error.status_code == 413
    assert fake.stats()["responses"] == {413: 1}
    assert sg.send(base_payload()).status_code == 202


def test_validate_mail_send_is_usable_directly():
    assert validate_mail_send(make_mail().get()) == []
    assert validate_mail_send([]) == [{"message": "Bad Request", "field": None, "help": None}]


# --- batches -----------------------------------------------------------------------------------


def test_batch_create_check_and_use(fake, sg):
    created = sg.client.mail.batch.post()
    assert created.status_code == 201
    batch_id = json.loads(created.body)["batch_id"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", batch_id)

    checked = sg.client.mail.batch._(batch_id).get()
    assert checked.status_code == 200 and json.loads(checked.body) == {"batch_id": batch_id}

    # The spec lists 400 "invalid batch id" (no 404) for GET /v3/mail/batch/{batch_id}.
    error = http_error(lambda: sg.client.mail.batch._("unknown").get())
    assert error.status_code == 400
    assert error.to_dict["errors"][0]["message"] == "invalid batch id"

    payload = base_payload()
    payload["batch_id"] = batch_id
    payload["send_at"] = 1_700_000_000
    assert sg.send(payload).status_code == 202
    assert fake.accepted()[0]["payload"]["batch_id"] == batch_id


# --- scripted failures ----------------------------------------------------------------------------


def test_scripted_429_with_retry_after_then_success(fake, sg):
    fake.script([{"status": 429, "headers": {"Retry-After": "1"}}])
    error = http_error(lambda: sg.send(make_mail()))
    assert error.status_code == 429
    assert error.headers["Retry-After"] == "1"
    assert error.to_dict == {"errors": [{"field": None, "message": "too many requests"}]}

    response = sg.send(make_mail())
    assert response.status_code == 202
    stats = fake.stats()
    assert stats["requests"] == 2
    assert stats["accepted_requests"] == 1
    assert stats["responses"] == {429: 1, 202: 1}


@pytest.mark.parametrize("status", [500, 502, 503, 413])
def test_scripted_error_statuses_are_not_accepted(fake, sg, status):
    fake.script([{"status": status}, {"status": status, "body": "upstream trouble"}])
    first = http_error(lambda: sg.send(make_mail()))
    second = http_error(lambda: sg.send(make_mail()))
    assert first.status_code == second.status_code == status
    assert "message" in first.to_dict["errors"][0]
    assert second.body == b"upstream trouble"
    assert fake.accepted() == []
    assert fake.stats()["responses"] == {status: 2}


def test_script_entries_apply_in_order(fake, sg):
    fake.script([{"status": 503}, {"status": 500}])
    codes = [http_error(lambda: sg.send(make_mail())).status_code for _ in range(2)]
    assert codes == [503, 500]
    assert sg.send(make_mail()).status_code == 202


@pytest.mark.parametrize(
    "entry",
    [{"status": 200}, {"hang": True, "drop": True}, {"drop": True, "acept": True}, "x", {}],
)
def test_bad_script_entries_are_refused(fake, entry):
    with pytest.raises(FakeSendGridError):
        fake.script([entry])
    with pytest.raises(FakeSendGridError):
        fake.control.script([entry])


def test_hang_times_out_on_the_client_and_is_counted(fake):
    sg = client_for(fake.url, timeout=0.3)
    fake.script([{"hang": True}])
    with pytest.raises(TimeoutError):
        sg.send(make_mail())
    # The server notices the client hanging up and ends the held request.
    assert fake.wait_for("completed", timeout=5, n=1)
    stats = fake.stats()
    assert stats["requests"] == 1
    assert stats["hung"] == 1
    assert stats["in_flight"] == 0
    assert stats["accepted_requests"] == 0
    assert stats["responses"] == {}
    assert client_for(fake.url).send(make_mail()).status_code == 202


def test_hang_with_accept_then_release(fake, sg):
    fake.script([{"hang": True, "accept": True}])
    thread, outcome = run_in_thread(lambda: sg.send(make_mail("held@example.com")))
    assert fake.wait_for("in_flight", timeout=5)
    assert fake.stats()["in_flight"] == 1
    accepted = fake.accepted()
    assert len(accepted) == 1 and MESSAGE_ID.fullmatch(accepted[0]["x_message_id"])
    assert fake.recipients() == ["held@example.com"]

    fake.release()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), (ConnectionError, http.client.HTTPException))
    assert fake.wait_for("completed", timeout=5, n=1)
    assert fake.stats()["in_flight"] == 0


def test_hang_is_bounded_by_seconds(fake, sg):
    fake.script([{"hang": True, "seconds": 0.2}])
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        sg.send(make_mail())
    assert fake.stats()["hung"] == 1


def test_hang_with_accept_keeps_validation(fake, sg):
    payload = base_payload()
    del payload["from"]
    fake.script([{"hang": True, "accept": True, "seconds": 0}])
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        sg.send(payload)
    assert fake.accepted() == []


@pytest.mark.parametrize("accept", [False, True])
def test_drop_closes_without_response(fake, sg, accept):
    fake.script([{"drop": True, "accept": accept}])
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        sg.send(make_mail("dropped@example.com"))
    stats = fake.stats()
    assert stats["dropped"] == 1
    assert stats["requests"] == 1
    assert stats["responses"] == {}
    assert fake.recipients() == (["dropped@example.com"] if accept else [])
    assert sg.send(make_mail()).status_code == 202


def test_drop_with_reset(fake, sg):
    fake.script([{"drop": True, "reset": True}])
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        sg.send(make_mail())
    assert fake.stats()["dropped"] == 1


def test_wait_for_requests(fake, sg):
    assert fake.wait_for("requests", timeout=0, n=1) is False
    thread, _ = run_in_thread(lambda: [sg.send(make_mail()) for _ in range(3)])
    assert fake.wait_for("requests", timeout=5, n=3)
    assert fake.wait_for("accepted", timeout=5, n=3)
    thread.join(5)
    assert fake.wait_for("requests", timeout=0.05, n=4) is False
    with pytest.raises(FakeSendGridError):
        fake.wait_for("nothing", timeout=0)


def test_reset_clears_everything(fake, sg):
    sg.send(make_mail())
    fake.script([{"status": 500}])
    fake.set_mode(forbidden=True)
    fake.set_suppressions("bounces", [{"email": "x@example.com", "created": 1}])
    fake.reset()
    assert fake.stats()["requests"] == 0
    assert fake.accepted() == [] and fake.recipients() == []
    assert sg.send(make_mail()).status_code == 202  # no script, not forbidden
    assert json.loads(sg.client.suppression.bounces.get().body) == []


# --- record modes -----------------------------------------------------------------------------


def test_record_recipients_mode_keeps_no_payloads():
    with FakeSendGrid(record="recipients") as fake:
        client_for(fake.url).send(make_mail("One@example.com", "two@example.com"))
        (entry,) = fake.accepted()
        assert set(entry) == {"x_message_id", "recipients"}
        assert fake.recipients() == ["one@example.com", "two@example.com"]
        assert fake.stats()["accepted_recipients"] == 2


def test_record_counts_mode_keeps_only_counts():
    with FakeSendGrid(record="counts") as fake:
        client_for(fake.url).send(make_mail("one@example.com", "two@example.com"))
        assert fake.stats()["accepted_recipients"] == 2
        with pytest.raises(FakeSendGridError):
            fake.recipients()
        with pytest.raises(FakeSendGridError, match="409"):
            fake.control.accepted()


# --- suppressions -------------------------------------------------------------------------------

BOUNCES = [
    {
        "email": f"bounce{i}@example.com",
        "created": 1_700_000_000 + (i // 2) * 100,
        "status": "5.1.1",
    }
    for i in range(7)
]


def test_suppression_paging_with_offset_and_limit(fake, sg):
    fake.set_suppressions("bounces", list(reversed(BOUNCES)))
    pages = []
    offset = 0
    while True:
        response = sg.client.suppression.bounces.get(query_params={"limit": 3, "offset": offset})
        page = json.loads(response.body)
        pages.append(page)
        if len(page) < 3:
            break
        offset += 3
    emails = [entry["email"] for page in pages for entry in page]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert emails == [b["email"] for b in BOUNCES]  # sorted by created, then email
    assert set(pages[0][0]) == {"created", "email", "reason", "status"}
    assert [r["query"] for r in fake.suppression_requests()] == [
        {"limit": "3", "offset": "0"},
        {"limit": "3", "offset": "3"},
        {"limit": "3", "offset": "6"},
    ]


def test_suppression_time_window_is_inclusive(fake, sg):
    fake.set_suppressions("bounces", BOUNCES)
    response = sg.client.suppression.bounces.get(
        query_params={"start_time": 1_700_000_100, "end_time": 1_700_000_200}
    )
    assert [e["created"] for e in json.loads(response.body)] == [1_700_000_100] * 2 + [
        1_700_000_200
    ] * 2
    assert fake.suppression_requests()[0]["query"] == {
        "end_time": "1700000200",
        "start_time": "1700000100",
    }


@pytest.mark.parametrize(
    ("kind", "entry", "expected_keys"),
    [
        ("unsubscribes", {"email": "u@example.com", "created": 5}, {"created", "email"}),
        (
            "spam_reports",
            {"email": "s@example.com", "created": 5, "ip": "10.0.0.1"},
            {"created", "email", "ip"},
        ),
        (
            "invalid_emails",
            {"email": "i@example.com", "created": 5, "reason": "unknown domain"},
            {"created", "email", "reason"},
        ),
    ],
)
def test_each_suppression_list(fake, sg, kind, entry, expected_keys):
    fake.set_suppressions(kind, [entry])
    response = getattr(sg.client.suppression, kind).get()
    (result,) = json.loads(response.body)
    assert set(result) == expected_keys
    assert all(result[k] == v for k, v in entry.items())


def test_suppressions_need_auth_and_valid_paging(fake):
    error = http_error(lambda: client_for(fake.url, "SG.bad").client.suppression.bounces.get())
    assert error.status_code == 401
    sg = client_for(fake.url)
    for params in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"start_time": "yesterday"}):
        assert (
            http_error(
                lambda params=params: sg.client.suppression.bounces.get(query_params=params)
            ).status_code
            == 400
        )
    with pytest.raises(FakeSendGridError):
        fake.set_suppressions("bounces", [{"email": "x@example.com"}])
    with pytest.raises(FakeSendGridError):
        fake.set_suppressions("complaints", [])


def test_suppression_responses_match_the_spec(fake, sg):
    path = default_spec_dir() / "tsg_suppressions_v3.json"
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = json.loads(path.read_text())
    registry = Registry().with_resource("urn:supp", DRAFT202012.create_resource(spec))
    entries = {
        "unsubscribes": [{"email": "u@example.com", "created": 1}],
        "bounces": [{"email": "b@example.com", "created": 1, "reason": "r", "status": "5.0.0"}],
        "spam_reports": [{"email": "s@example.com", "created": 1, "ip": "10.0.0.1"}],
        "invalid_emails": [{"email": "i@example.com", "created": 1, "reason": "r"}],
    }
    for kind, items in entries.items():
        fake.set_suppressions(kind, items)
        body = json.loads(getattr(sg.client.suppression, kind).get().body)
        pointer = (
            f"/paths/~1v3~1suppression~1{kind}/get/responses/200/content/application~1json/schema"
        )
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"urn:supp#{pointer}"}, registry=registry
        )
        assert list(validator.iter_errors(body)) == [], kind


# --- routing -----------------------------------------------------------------------------------


def test_unknown_path_is_404(fake, sg):
    error = http_error(lambda: sg.client.templates.get())
    assert error.status_code == 404
    assert error.to_dict == {"errors": [{"field": None, "message": "resource not found"}]}
    assert http_error(lambda: sg.client.mail.send.get()).status_code == 405
    assert fake.stats()["requests"] == 0


# --- control over HTTP and the separate process --------------------------------------------------


def test_http_control_matches_in_process_methods(fake, sg):
    control = FakeSendGridControl(fake.url)
    control.script([{"status": 503}])
    assert http_error(lambda: sg.send(make_mail())).status_code == 503
    sg.send(make_mail("http@example.com"))
    control.set_suppressions("unsubscribes", [{"email": "gone@example.com", "created": 10}])
    sg.client.suppression.unsubscribes.get(query_params={"limit": 10})
    assert control.stats() == fake.stats()
    assert control.accepted() == fake.accepted()
    assert control.recipients() == ["http@example.com"]
    assert control.suppression_requests() == fake.suppression_requests()
    assert control.wait_for("requests", timeout=1, n=2) is True
    control.reset()
    assert fake.stats()["requests"] == 0
    with pytest.raises(ValueError):
        FakeSendGridControl("http://example.com:80")


def test_separate_process_ready_line_and_sigint():
    command = [sys.executable, "-m", "tests.fake_sendgrid", "--port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=Path(__file__).parents[1]
    )
    try:
        line = process.stdout.readline().decode()
        assert re.fullmatch(r"READY http://127\.0\.0\.1:\d+\n", line)
        url = line.split()[1]
        assert FakeSendGridControl(url).health() == {"ok": True, "record": "full"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == b""  # exactly one line on stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_separate_process_is_controlled_over_http():
    with start_fake_sendgrid_process(record="recipients", api_key="SG.proc") as proc:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", proc.url)
        sg = client_for(proc.url, api_key="SG.proc")
        proc.script([{"status": 429, "headers": {"Retry-After": "2"}}])
        assert http_error(lambda: sg.send(make_mail())).headers["Retry-After"] == "2"
        assert sg.send(make_mail("Proc@example.com")).status_code == 202
        assert proc.wait_for("requests", timeout=5, n=2)
        assert proc.recipients() == ["proc@example.com"]
        stats = proc.stats()
        assert stats["responses"] == {429: 1, 202: 1}
        assert stats["record"] == "recipients"

        proc.script([{"hang": True}])
        thread, outcome = run_in_thread(lambda: sg.send(make_mail()))
        assert proc.wait_for("in_flight", timeout=5)
        proc.release()
        thread.join(5)
        assert isinstance(outcome.get("error"), (ConnectionError, http.client.HTTPException))
    assert proc.process.returncode == 0


# --- the official schema -------------------------------------------------------------------------


def rich_mail() -> Mail:
    mail = Mail(
        from_email=("news@example.org", "MS Research News"),
        subject="MS research news, December",
        plain_text_content="Plain text body",
        html_content="<p>HTML body</p>",
    )
    for i, address in enumerate(["one@example.com", "two@example.com"]):
        personalization = Personalization()
        personalization.add_to(To(address, f"Reader {i}"))
        personalization.add_custom_arg(CustomArg("subscriber_id", str(i)))
        personalization.add_header(Header("List-Unsubscribe", f"<https://example.org/u/{i}>"))
        mail.add_personalization(personalization)
    mail.reply_to = ReplyTo("editor@example.org", "Editor")
    mail.add_category(Category("newsletter"))
    mail.add_custom_arg(CustomArg("issue", "2026-12"))
    mail.send_at = SendAt(1_700_000_000)
    mail.asm = Asm(1234)
    mail.add_content(Content("text/x-amp-html", "<html amp4email></html>"))
    return mail


def test_well_formed_mail_matches_the_official_schema(fake, sg):
    validator = load_mail_send_schema()
    assert validator is not None, f"SendGrid OpenAPI spec not found in {default_spec_dir()}"
    payload = rich_mail().get()
    assert [e.message for e in validator.iter_errors(payload)] == []
    assert sg.send(payload).status_code == 202
    assert fake.accepted()[0]["payload"] == payload

    broken = copy.deepcopy(payload)
    del broken["from"]
    broken["personalizations"][0]["to"][0]["email"] = "no-at-sign"
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("'from' is a required property" in m for m in messages)
    assert any("is not a 'email'" in m for m in messages)


def test_schema_quirk_custom_args_is_patched():
    raw = load_mail_send_schema(patch_quirks=False)
    assert raw is not None, f"SendGrid OpenAPI spec not found in {default_spec_dir()}"
    payload = rich_mail().get()
    # Unpatched, the published spec rejects the object the API (and the helper) uses.
    assert [e.path[-1] for e in raw.iter_errors(payload)] == ["custom_args"]
    patched = load_mail_send_schema()
    assert not list(patched.iter_errors(payload))
    payload["custom_args"] = {"issue": 12}
    assert list(patched.iter_errors(payload))


def test_schema_loader_returns_none_without_spec(tmp_path):
    assert load_mail_send_schema(tmp_path / "missing.json") is None


@pytest.mark.parametrize("address", ["Ana <ana@example.org>", "ana@localhost", "ana@[127.0.0.1]"])
def test_addresses_are_read_as_sendgrid_reads_them(fake, sg, address):
    # The schema's "email" format, checked strictly: no display name, a domain with a dot.
    payload = base_payload()
    payload["personalizations"][0]["to"][0]["email"] = address
    error = http_error(lambda: sg.send(payload))
    assert error.status_code == 400
    assert error.to_dict["errors"] == [
        {
            "message": "Does not contain a valid address.",
            "field": "personalizations.0.to.0.email",
            "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
            "#message.personalizations.to.email",
        }
    ]
    assert fake.accepted() == []


def test_the_spec_copy_is_in_the_repository_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("SENDGRID_OPENAPI_DIR", raising=False)
    copy_dir = Path(__file__).parent / "fake_sendgrid" / "openapi"
    assert default_spec_dir() == copy_dir
    names = {p.name for p in copy_dir.iterdir()}
    assert {"tsg_mail_v3.json", "tsg_suppressions_v3.json", "LICENSE.twilio-sendgrid-oai"} <= names
    monkeypatch.setenv("SENDGRID_OPENAPI_DIR", str(tmp_path))
    assert default_spec_dir() == tmp_path
    assert load_mail_send_schema() is None
