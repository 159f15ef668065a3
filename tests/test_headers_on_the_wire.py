"""Names and subjects as mail clients decode them: exactly the stored text, in headers folded the
way RFC 2047 and RFC 5322 say (encoded words of at most 75 characters, no line over 998 octets).

Every message is read back with Python's email parser (policy.default), as a client would (a
name that needs several encoded words with `email.header`: see `mailbox`).
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header

import pytest
import yaml
from aiosmtpd.controller import Controller

from newsletter.config import load_settings
from newsletter.delivery import RetryPolicy, send_issue
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, configure, database, free_port, parse
from tests.support.smtp import Recorder

pytestmark = pytest.mark.both_engines

# Decodes to "Bcc: victim@evil.example": written raw, a client shows that, and `To:` becomes a group.
LOOKS_ENCODED = "=?utf-8?b?QmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?="
SENDER_LOOKS_ENCODED = "=?utf-8?q?Your_Bank?= <boss@evil.example>"
GERMAN_SUBJECT = "Multiple Sklerose: neue Übersichtsarbeiten im Dezember – größer und schöner"
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def raw_header(raw: bytes, name: bytes) -> bytes:
    """One header as written (not decoded), its folded lines included."""
    lines = header_lines(raw)
    start = next(i for i, line in enumerate(lines) if line.startswith(name + b":"))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    return b"\r\n".join(lines[start:end])


def folding_problems(raw: bytes) -> list[str]:
    """Where the top-level header breaks RFC 2047 (encoded words ≤ 75 characters, their lines
    ≤ 76) or RFC 5322 (lines ≤ 998 octets)."""
    problems = []
    for line in header_lines(raw):
        words = ENCODED_WORD.findall(line)
        if len(line) > 998:
            problems.append(f"line of {len(line)} octets: {line[:40]!r}…")
        if words and len(line) > 76:
            problems.append(f"line with encoded words of {len(line)} characters: {line[:40]!r}…")
        problems += [f"encoded word of {len(w)} characters: {w!r}" for w in words if len(w) > 75]
    return problems


def set_sender_name(workspace, name: str) -> None:
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["sender"]["name"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def set_subject(workspace, subject: str) -> None:
    path = workspace / "issues" / f"{ISSUE}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["subject"] = subject
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def outbox_files(settings) -> dict[str, bytes]:
    """To address → the raw message written to the outbox."""
    out = {}
    for path in sorted((settings.paths.outbox / ISSUE).glob("*.eml")):
        raw = path.read_bytes()
        out[parse(raw)["To"].addresses[0].addr_spec] = raw
    return out


def mailbox(raw: bytes, header: str) -> tuple[str, str]:
    """(display name, address) of a header that must hold exactly one mailbox, as a client reads it.

    Python 3.11's parser keeps the space between two adjacent encoded words of a display name,
    which RFC 2047 (section 6.2) says to ignore (CPython gh-128110, fixed in later versions): a
    name that needs several encoded words is decoded with `email.header`, which follows the RFC.
    """
    msg = parse(raw)
    [address] = msg[header].addresses
    assert msg[header].groups[0].display_name is None  # a mailbox, not a group
    value = raw_header(raw, header.encode()).split(b":", 1)[1]
    if len(ENCODED_WORD.findall(value)) <= 1:
        return address.display_name, address.addr_spec
    shown = str(make_header(decode_header(value.decode("ascii"))))
    assert shown.endswith(f" <{address.addr_spec}>")
    return shown.removesuffix(f" <{address.addr_spec}>"), address.addr_spec


def assert_reads_as(raw: bytes, to_name: str, to_address: str, from_name: str, from_address: str):
    msg = parse(raw)
    assert mailbox(raw, "To") == (to_name, to_address)
    assert mailbox(raw, "From") == (from_name, from_address)
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg.defects == [] and msg["To"].defects == () and msg["From"].defects == ()
    assert folding_problems(raw) == []


# Names that look like encoded words (D4) ------------------------------------------------------


def test_a_name_that_looks_like_an_encoded_word_reaches_the_reader_as_typed(workspace, run):
    set_sender_name(workspace, SENDER_LOOKS_ENCODED)
    assert run("subscribers", "add", "eve@example.org", "--name", LOOKS_ENCODED).exit_code == 0
    assert run("subscribers", "add", "ana@example.org", "--name", "Ana Lopez").exit_code == 0

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    settings = load_settings(workspace / "newsletter.yaml")
    sender = settings.sender.email
    files = outbox_files(settings)
    assert sorted(files) == ["ana@example.org", "eve@example.org"]
    assert_reads_as(files["eve@example.org"], LOOKS_ENCODED, "eve@example.org",
                    SENDER_LOOKS_ENCODED, sender)  # fmt: skip
    assert b"victim@evil.example" not in files["eve@example.org"]
    # A plain name stays readable as it is in the raw header.
    assert_reads_as(files["ana@example.org"], "Ana Lopez", "ana@example.org",
                    SENDER_LOOKS_ENCODED, sender)  # fmt: skip
    assert b"\r\nTo: Ana Lopez <ana@example.org>\r\n" in files["ana@example.org"]


@pytest.fixture
def smtp_server(workspace, monkeypatch):
    """An aiosmtpd server that records what it receives, and settings pointing at it."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings = configure(
        workspace,
        backend="smtp",
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5},
    )
    yield handler, settings
    controller.stop()


def test_over_smtp_names_that_look_like_encoded_words_arrive_as_typed(workspace, smtp_server):
    set_sender_name(workspace, SENDER_LOOKS_ENCODED)
    handler, _ = smtp_server
    settings = load_settings(workspace / "newsletter.yaml")
    db = database(settings)
    insert(db, "eve@example.org", name=LOOKS_ENCODED, topics="all")

    send_issue(settings, db, ISSUE, backend="smtp", sleep=lambda s: None)

    [(rcpts, raw)] = handler.messages
    assert rcpts == ["eve@example.org"]
    assert_reads_as(raw, LOOKS_ENCODED, "eve@example.org", SENDER_LOOKS_ENCODED,
                    settings.sender.email)  # fmt: skip


def test_sendgrid_is_given_the_names_as_typed(workspace, monkeypatch):
    """SendGrid takes names as JSON and writes the headers itself: it gets the stored text."""
    set_sender_name(workspace, LOOKS_ENCODED)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    settings = configure(workspace, backend="sendgrid", sendgrid={"sync_suppressions": False})
    db = database(settings)
    insert(db, "eve@example.org", name=LOOKS_ENCODED, topics="all")
    with FakeSendGrid() as fake:
        monkeypatch.setenv("SENDGRID_API_HOST", fake.url)
        send_issue(settings, db, ISSUE, retry=RetryPolicy(max_attempts=1), sleep=lambda s: None)
        [request] = fake.accepted()
    payload = request["payload"]
    assert payload["personalizations"][0]["to"] == [
        {"email": "eve@example.org", "name": LOOKS_ENCODED}
    ]
    assert payload["from"]["name"] == LOOKS_ENCODED


def test_a_subject_that_looks_like_an_encoded_word_reaches_the_reader_as_typed(workspace, run):
    subject = f"Tips {LOOKS_ENCODED} for December"
    set_subject(workspace, subject)
    assert run("subscribers", "add", "ana@example.org").exit_code == 0

    assert run("send", ISSUE, "--yes").exit_code == 0

    [raw] = outbox_files(load_settings(workspace / "newsletter.yaml")).values()
    assert parse(raw)["Subject"] == subject
    assert b"victim@evil.example" not in raw
    assert folding_problems(raw) == []


# Folding (D5) ---------------------------------------------------------------------------------


def test_a_75_character_german_subject_folds_into_short_encoded_words(workspace, run):
    assert len(GERMAN_SUBJECT) == 75
    set_subject(workspace, GERMAN_SUBJECT)
    assert run("subscribers", "add", "ana@example.org").exit_code == 0

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    [raw] = outbox_files(load_settings(workspace / "newsletter.yaml")).values()
    assert parse(raw)["Subject"] == GERMAN_SUBJECT
    subject = raw_header(raw, b"Subject")
    assert len(ENCODED_WORD.findall(subject)) >= 2
    assert folding_problems(raw) == []


def test_long_names_never_write_a_header_line_over_998_octets(workspace, run):
    # The longest name the list takes, in letters that must be encoded...
    longest = "Ö" * 100
    assert run("subscribers", "add", "max@example.org", "--name", longest).exit_code == 0
    plain = ("Dimitrios Papadopoulos, " * 5)[:100].strip()  # stays readable as it is
    assert run("subscribers", "add", "plain@example.org", "--name", plain).exit_code == 0
    # ...and one stored before names were limited, without a space to fold at.
    settings = load_settings(workspace / "newsletter.yaml")
    old = "x" * 1200
    insert(database(settings), "old@example.org", name=old, topics="all")
    set_sender_name(workspace, "Forschung zur Multiplen Sklerose – " + "ä" * 70)

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    files = outbox_files(settings)
    sender = ("Forschung zur Multiplen Sklerose – " + "ä" * 70, settings.sender.email)
    assert_reads_as(files["max@example.org"], longest, "max@example.org", *sender)
    assert_reads_as(files["old@example.org"], old, "old@example.org", *sender)
    assert_reads_as(files["plain@example.org"], plain, "plain@example.org", *sender)
    assert f'\r\nTo: "{plain}"\r\n <plain@example.org>\r\n'.encode() in files["plain@example.org"]
