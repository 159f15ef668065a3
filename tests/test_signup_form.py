"""The signup form over HTTP (`GET/POST /subscribe`): what it shows, that its answer is the same
bytes whatever the address's state, every kind of bad input (a clear page, nothing written, no
email), the limits per address and per client, cross-origin POSTs and the embedded form, and
that no GET changes the database. The app's clock is the test's (`Clock`): no sleeps."""

from __future__ import annotations

import hashlib
import re

import pytest
from markupsafe import escape as html_escape

from newsletter.signup.forms import FormStamps
from newsletter.store import subscribers as store
from tests.conftest import TEST_SECRET
from tests.support.signup import (
    Clock,
    configure_signup,
    confirm_token,
    dump,
    emails_to,
    form,
    fresh_stamp,
    mailer,
    make_app,
    sign_up,
    signup_emails,
    stamp_of,
    text_of,
)

pytestmark = pytest.mark.both_engines

TOPIC_SLUGS = [
    "treatment-safety",
    "diagnosis-imaging",
    "other-conditions",
    "gut-microbiome",
    "genetics",
    "repair-remyelination",
    "womens-health",
    "infections",
    "symptoms-daily-life",
]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def signup_app(settings, clock, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    app = make_app(settings, clock)
    yield app
    mailer(app).wait()


@pytest.fixture
def client(signup_app):
    return signup_app.test_client()


def sent(signup_app, workspace):
    """Every signup email written so far (after the background sender is done)."""
    mailer(signup_app).wait()
    return signup_emails(workspace)


def rows(db, table: str) -> list[dict]:
    """The table's rows, in no particular order (the tests count them or take the one)."""
    return [dict(r) for r in db.conn.execute(f"SELECT * FROM {table}")]


# --- The page ---------------------------------------------------------------------------------------


@pytest.mark.sqlite_only("the page's content")
def test_the_form_offers_every_topic_unticked_the_consent_and_the_privacy_notice(client, settings):
    response = client.get("/subscribe")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    boxes = re.findall(
        r'<input type="checkbox" id="topic-([a-z-]+)" name="topics" value="([^"]+)"([^>]*)>', html
    )
    assert [value for _, value, _ in boxes] == ["all", *TOPIC_SLUGS]
    assert all("checked" not in rest for _, _, rest in boxes)  # none ticked beforehand
    assert "All topics, including new ones" in html
    for topic in settings.topics:
        assert f">{html_escape(topic.label)}</label>" in html
        assert html_escape(topic.description) in html
    assert html_escape(settings.signup.consent_text) in html
    assert f'<a href="{settings.privacy_url}">Our privacy notice</a>' in html
    assert '<form method="post" action="/subscribe"' in html
    assert re.search(r'<input type="email" id="email" name="email"[^>]* required', html)
    assert '<label for="email">Email address</label>' in html
    assert "<script" not in html.lower() and " style=" not in html  # works without JavaScript
    # The same headers as the preference centre.
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


@pytest.mark.sqlite_only("a setting")
def test_no_signup_page_unless_the_settings_offer_it(workspace, clock, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    settings = configure_signup(workspace, enabled=False)
    client = make_app(settings, clock).test_client()
    assert client.get("/subscribe").status_code == 404
    assert client.post("/subscribe", data={"email": "a@example.org"}).status_code == 404
    assert client.get("/confirm/" + "a" * 43).status_code == 404


# --- A signup ----------------------------------------------------------------------------------------


def test_a_signup_waits_in_its_own_table_and_its_token_is_kept_only_as_a_hash(
    client, clock, signup_app, db, workspace
):
    response = sign_up(client, clock, "Ana@Example.org", name="Ana")
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    assert store.get_row_by_email(db, "ana@example.org") is None  # not a subscriber yet

    ((_, message),) = sent(signup_app, workspace)
    assert message["To"] == "ana@example.org"
    token = confirm_token(message)
    (pending,) = rows(db, "signups")
    assert pending["email"] == "ana@example.org"
    assert pending["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert pending["topics"] == "genetics" and pending["name"] == "Ana"
    assert pending["expires_at"] == "2026-12-03T09:00:20Z"  # 48 hours, the default
    assert token not in dump(db)  # the link's token is nowhere in the database


def test_the_confirmation_email_holds_nothing_the_visitor_typed(
    client, clock, signup_app, workspace
):
    typed = "Cheap pills http://spam.example <b>now</b> %%name%% {{ x }}"
    assert sign_up(client, clock, "ana@example.org", name=typed).status_code == 200
    ((path, message),) = sent(signup_app, workspace)
    raw = path.read_bytes()
    for piece in ("Cheap", "spam.example", "<b>now", "%%name%%", "{{ x }}"):
        assert piece.encode() not in raw, piece
    assert message["To"] == "ana@example.org"  # the bare address: no name in the header
    assert message["Subject"] == "Please confirm your subscription to MS Research Monthly"
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message  # not a list message: there is nothing to leave
    text = text_of(message)
    assert "on these topics: Genetics." in text
    assert f"https://news.ms-research.example.org/confirm/{confirm_token(message)}" in text
    assert message.get_body(("html",)) is not None


# --- The same answer whatever the state ---------------------------------------------------------------


def put_in_state(db, address: str, state: str) -> None:
    if state in ("subscribed", "unsubscribed", "bounced", "complained", "invalid"):
        store.insert(db, address, status=state, source="import")
    elif state == "unsubscribed over a bounce":
        sub = store.insert(db, address, status="bounced", source="sendgrid", reason="bounce")
        store.write_status(db, sub.id, "unsubscribed", "sendgrid", "SendGrid unsubscribe")


STATES = {
    # state → what the form sends behind the identical answer
    "new": "confirm",
    "pending, mailed a day ago": "confirm",
    "pending, mailed just now": None,
    "subscribed": "already",
    "subscribed, mailed just now": None,
    "unsubscribed": "confirm",
    "bounced": None,
    "complained": None,
    "invalid": None,
    "unsubscribed over a bounce": None,
}


def test_the_answer_is_the_same_bytes_whatever_the_address_state(
    client, clock, signup_app, db, workspace
):
    addresses = {state: f"person{n}@example.org" for n, state in enumerate(STATES)}
    for state, address in addresses.items():
        put_in_state(db, address, state)
    # Earlier signups: one a day ago, the others just now (each from its own network).
    sign_up(client, clock, addresses["pending, mailed a day ago"], ip="198.51.100.1")
    clock.advance(hours=25)
    sign_up(client, clock, addresses["pending, mailed just now"], ip="198.51.100.2")
    store.insert(db, addresses["subscribed, mailed just now"])
    sign_up(client, clock, addresses["subscribed, mailed just now"], ip="198.51.100.3")
    mailer(signup_app).wait()
    already = len(signup_emails(workspace))

    answers = {}
    for n, (state, address) in enumerate(addresses.items()):
        response = sign_up(client, clock, address, ip=f"203.0.113.{n + 1}")
        headers = sorted((k, v) for k, v in response.headers.items() if k != "Date")
        answers[state] = (response.status_code, headers, response.get_data())
    first = answers["new"]
    assert first[0] == 200
    for state, answer in answers.items():
        assert answer == first, state

    # Behind the same answer, each state got what the table in newsletter/signup/pending.py says.
    mailer(signup_app).wait()
    new_emails = signup_emails(workspace)[already:]
    got = {m["To"]: ("confirm" if "/confirm/" in text_of(m) else "already") for _, m in new_emails}
    expected = {addresses[s]: kind for s, kind in STATES.items() if kind is not None}
    assert got == expected
    assert len(new_emails) == len(expected)


# --- Bad input: a clear page, nothing written, no email ---------------------------------------------


def post(client, data, *, ip="192.0.2.10", headers=None, **kw):
    return client.post(
        "/subscribe", data=data, headers=headers or {}, environ_base={"REMOTE_ADDR": ip}, **kw
    )


BAD_FORMS = {
    # case → (form changes, status, what the page says)
    "malformed address": ({"email": "ana.example.org"}, 422, "This is not an email address"),
    "address with a non-ASCII part before the @": (
        {"email": "anä@example.org"},
        422,
        "This is not an email address",
    ),
    "no address": ({"email": "  "}, 422, "Please enter your email address."),
    "name with a control character": ({"name": "Ana\x1b[31m"}, 422, "control characters"),
    "name with a line break": ({"name": "Ana\r\nBcc: x@example.org"}, 422, "line breaks"),
    "name over the length limit": ({"name": "A" * 101}, 422, "at most 100 characters"),
    "no topic ticked": (
        {"topics": []},
        422,
        "Please tick at least one topic, or “All topics, including new ones”.",
    ),
    "unknown topic posted": (
        {"topics": ["genetics", "astrology"]},
        422,
        "The form sent a topic that is not on our list.",
    ),
    "honeypot filled": ({"website": "http://spam.example"}, 400, "We could not accept this form"),
    "no stamp": ({"stamp": ""}, 400, "This form cannot be used"),
    "forged stamp": ({"stamp": "subscribe-page~1.forged"}, 400, "This form cannot be used"),
    "stamp signed with another key": (
        {"stamp": FormStamps("another-secret-key-0123456789-abcdef").embedded("x")},
        400,
        "This form cannot be used",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_bad_input_gets_a_clear_page_and_nothing_is_written(
    case, client, clock, signup_app, db, workspace
):
    changes, status, says = BAD_FORMS[case]
    data = form(fresh_stamp(client, clock), "ana@example.org", name="Ana")
    data.update(changes)
    before = dump(db)
    response = post(client, data)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert says in page
    assert "Traceback" not in page
    assert dump(db) == before
    assert sent(signup_app, workspace) == []
    if status == 422:  # the form again, with what was typed, and a fresh stamp
        assert '<form method="post" action="/subscribe"' in page
        assert 'role="alert"' in page
        assert stamp_of(page) != data["stamp"]


@pytest.mark.sqlite_only("the page's content")
def test_the_form_shows_what_was_typed_escaped(client, clock):
    data = form(fresh_stamp(client, clock), 'ana"><script>x</script>@', name="<b>Ana</b>")
    page = post(client, data).get_data(as_text=True)
    assert "<script>x" not in page and "<b>Ana" not in page
    assert 'value="ana&#34;&gt;&lt;script&gt;x&lt;/script&gt;@"' in page
    assert 'value="&lt;b&gt;Ana&lt;/b&gt;"' in page


def test_posted_too_fast_shows_the_form_again_and_writes_nothing(
    client, clock, signup_app, db, workspace
):
    page = client.get("/subscribe").get_data(as_text=True)
    clock.advance(seconds=1)  # under the 3 s minimum fill time
    before = dump(db)
    response = post(client, form(stamp_of(page), "ana@example.org", topics=["all"]))
    assert response.status_code == 422
    again = response.get_data(as_text=True)
    assert "quicker than a person fills in the form" in again
    assert 'value="ana@example.org"' in again and 'value="all" checked' in again
    assert dump(db) == before and sent(signup_app, workspace) == []
    # A person reads the message and sends the form again: accepted.
    clock.advance(seconds=5)
    assert post(client, form(stamp_of(again), "ana@example.org", topics=["all"])).status_code == 200
    assert [m["To"] for _, m in sent(signup_app, workspace)] == ["ana@example.org"]


def test_a_form_left_open_for_days_is_shown_again(client, clock, db):
    page = client.get("/subscribe").get_data(as_text=True)
    clock.advance(days=2)
    before = dump(db)
    response = post(client, form(stamp_of(page), "ana@example.org"))
    assert response.status_code == 422
    assert "open for a long time" in response.get_data(as_text=True)
    assert dump(db) == before


def test_a_body_over_the_limit_is_refused(client, clock, signup_app, db, workspace):
    data = form(fresh_stamp(client, clock), "ana@example.org", name="x" * 20_000)
    before = dump(db)
    response = post(client, data)
    assert response.status_code == 413
    assert "That request was too large." in response.get_data(as_text=True)
    assert dump(db) == before and sent(signup_app, workspace) == []


# --- Other sites ---------------------------------------------------------------------------------------


ELSEWHERE = "https://www.ms-research.example.org"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, 200),  # our page: no Referer
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "same-site", "Origin": ELSEWHERE}, 403),  # not listed (yet)
        ({"Sec-Fetch-Site": "cross-site", "Origin": "null"}, 403),  # a page hiding its origin
        ({"Origin": "https://evil.example"}, 403),  # an older browser: no Sec-Fetch-Site
        ({"Origin": "https://news.ms-research.example.org"}, 200),  # ... on our own page
        ({}, 200),  # a program: no browser on another site to misuse; the other checks hold
    ],
)
def test_a_post_from_another_site_is_refused_unless_allowed(
    client, clock, signup_app, db, workspace, headers, status
):
    before = dump(db)
    response = sign_up(client, clock, "ana@example.org", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "This form cannot be sent from there" in response.get_data(as_text=True)
        assert dump(db) == before and sent(signup_app, workspace) == []


def test_an_allowed_site_posts_through_the_same_checks(workspace, clock, monkeypatch, db):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    settings = configure_signup(workspace, allowed_origins=[ELSEWHERE + "/"])
    app = make_app(settings, clock)
    client = app.test_client()
    there = {"Sec-Fetch-Site": "same-site", "Origin": ELSEWHERE}
    assert sign_up(client, clock, "ana@example.org", headers=there).status_code == 200
    # The same checks apply: a bad address, the honeypot, a quick robot.
    data = form(fresh_stamp(client, clock), "not-an-address")
    assert post(client, data, headers=there).status_code == 422
    data = form(fresh_stamp(client, clock), "bo@example.org", website="x")
    assert post(client, data, headers=there).status_code == 400
    page = client.get("/subscribe").get_data(as_text=True)
    assert post(client, form(stamp_of(page), "bo@example.org"), headers=there).status_code == 422
    mailer(app).wait()
    assert [m["To"] for _, m in signup_emails(workspace)] == ["ana@example.org"]


def test_the_embedded_form_is_completed_on_our_page(run, workspace, clock, monkeypatch, db):
    settings = configure_signup(workspace, allowed_origins=[ELSEWHERE])
    result = run("signup-form", "--form-id", "home-page")
    assert result.exit_code == 0, result.output
    snippet = result.stdout
    assert 'action="https://news.ms-research.example.org/subscribe"' in snippet
    app = make_app(settings, clock)
    client = app.test_client()
    there = {"Sec-Fetch-Site": "same-site", "Origin": ELSEWHERE}
    before = dump(db)

    # The snippet was printed once, so it cannot say when it was shown: the first POST gets our
    # own form back, filled in, with a stamp of its own (the form's id kept).
    first = post(
        client, form(stamp_of(snippet), "ana@example.org", topics=["genetics"]), headers=there
    )
    assert first.status_code == 200
    page = first.get_data(as_text=True)
    assert "One more step" in page and 'value="ana@example.org"' in page
    assert 'value="genetics" checked' in page
    assert dump(db) == before
    stamp = stamp_of(page)
    assert FormStamps(TEST_SECRET).read(stamp).form_id == "home-page"

    clock.advance(seconds=10)
    mine = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    assert post(client, form(stamp, "ana@example.org"), headers=mine).status_code == 200
    mailer(app).wait()
    (message,) = emails_to(workspace, "ana@example.org")
    assert client.post(f"/confirm/{confirm_token(message)}").status_code == 303
    (record,) = rows(db, "consents")
    assert record["form_id"] == "home-page"


@pytest.mark.sqlite_only("the signup-form command: no database")
def test_signup_form_refuses_when_signup_is_off(run, workspace):
    configure_signup(workspace, enabled=False)
    result = run("signup-form")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: signup.enabled is false")
    assert result.stdout == ""


@pytest.mark.sqlite_only("the signup-form command: no database")
def test_signup_form_warns_when_no_site_may_post_it(run):
    result = run("signup-form")
    assert result.exit_code == 0
    assert "warning: signup.allowed_origins is empty" in result.stderr
    assert result.stdout.startswith('<form class="nl-signup"')
    assert "<script" not in result.stdout


# --- Limits -------------------------------------------------------------------------------------------


def test_a_hundred_posts_for_one_address_in_a_minute_send_one_email(
    client, clock, signup_app, db, workspace
):
    stamp = fresh_stamp(client, clock)
    answers = set()
    for n in range(100):
        clock.advance(seconds=0.6)
        response = post(client, form(stamp, "victim@example.org"), ip=f"10.0.{n}.1")
        answers.add((response.status_code, response.get_data()))
    assert len(answers) == 1 and answers.pop()[0] == 200
    assert len(sent(signup_app, workspace)) == 1
    assert len(rows(db, "signups")) == 1

    # A day later the address may get one more (a new link; the old one stops working).
    (first,) = emails_to(workspace, "victim@example.org")
    clock.advance(hours=24)
    post(client, form(fresh_stamp(client, clock), "victim@example.org"), ip="10.1.0.1")
    mailer(signup_app).wait()
    emails = emails_to(workspace, "victim@example.org")
    assert len(emails) == 2
    old, new = confirm_token(first), confirm_token(emails[1])
    assert old != new
    assert client.get(f"/confirm/{old}").status_code == 400
    assert client.get(f"/confirm/{new}").status_code == 200


def test_a_hundred_posts_from_one_client_get_429_after_the_limit(
    client, clock, signup_app, db, workspace
):
    stamp = fresh_stamp(client, clock)
    statuses = []
    for n in range(100):
        response = post(client, form(stamp, f"person{n}@example.org"), ip="192.0.2.99")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "3600"
            assert "Too many signups from your network" in response.get_data(as_text=True)
    assert statuses == [200] * 5 + [429] * 95
    assert len(sent(signup_app, workspace)) == 5
    assert len(rows(db, "signups")) == 5
    assert len(rows(db, "signup_attempts")) == 5  # refused ones are not even counted
    assert "192.0.2.99" not in dump(db)  # counted under a keyed hash, never the address

    # Another network is not affected; this one may sign up again an hour later.
    assert post(client, form(stamp, "other@example.org"), ip="192.0.2.100").status_code == 200
    clock.advance(minutes=61)
    stamp = fresh_stamp(client, clock)
    assert post(client, form(stamp, "later@example.org"), ip="192.0.2.99").status_code == 200


def test_an_ipv6_client_is_counted_by_its_64_network(client, clock):
    stamp = fresh_stamp(client, clock)
    statuses = [
        post(client, form(stamp, f"p{n}@example.org"), ip=f"2001:db8:1:2::{n + 1:x}").status_code
        for n in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    assert post(client, form(stamp, "q@example.org"), ip="2001:db8:1:3::1").status_code == 200


def test_forwarded_for_counts_only_behind_a_trusted_proxy(workspace, clock, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)

    def statuses(settings):
        client = make_app(settings, clock).test_client()
        stamp = fresh_stamp(client, clock)
        return [
            post(
                client,
                form(stamp, f"p{n}@example.org"),
                ip="10.0.0.5",  # the proxy
                headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
            ).status_code
            for n in range(6)
        ]

    # Not trusted: every request comes from the proxy, one client.
    assert statuses(configure_signup(workspace)) == [200] * 5 + [429]
    # Trusted: six different clients behind it.
    clock.advance(hours=2)
    assert statuses(configure_signup(workspace, trusted_proxies=["10.0.0.0/8"])) == [200] * 6


# --- No GET changes anything ---------------------------------------------------------------------------


def test_no_get_changes_the_database(client, clock, signup_app, db, workspace):
    sign_up(client, clock, "expired@example.org", ip="192.0.2.1")
    sign_up(client, clock, "used@example.org", ip="192.0.2.2")
    mailer(signup_app).wait()
    used = confirm_token(emails_to(workspace, "used@example.org")[0])
    assert client.post(f"/confirm/{used}").status_code == 303
    clock.advance(hours=47)
    sign_up(client, clock, "valid@example.org", ip="192.0.2.3")
    clock.advance(hours=1)  # the first signup's link has expired, the last one's has not
    mailer(signup_app).wait()
    expired = confirm_token(emails_to(workspace, "expired@example.org")[0])
    valid = confirm_token(emails_to(workspace, "valid@example.org")[0])
    before = dump(db)
    assert "expired@example.org" in before  # not purged: a GET never purges either
    expected = {
        "/subscribe": 200,
        f"/confirm/{valid}": 200,
        f"/confirm/{used}": 410,
        f"/confirm/{expired}": 410,
        f"/confirm/{valid[:-3]}": 400,
        "/confirm/forged": 400,
    }
    for path, status in expected.items():
        for method in ("GET", "HEAD"):
            assert client.open(path, method=method).status_code == status, (method, path)
    assert dump(db) == before


@pytest.mark.sqlite_only("the signup-form command: no database")
def test_signup_form_writes_a_file_or_names_why_not(run, workspace):
    result = run("signup-form", "-o", "form.html")
    assert result.exit_code == 0
    assert (workspace / "form.html").read_text().startswith('<form class="nl-signup"')
    assert "Wrote the signup form to form.html" in result.stderr
    result = run("signup-form", "-o", "missing/form.html")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: missing/form.html: cannot write:")
    assert "Traceback" not in result.output
