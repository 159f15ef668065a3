"""CSV parsing and validation of subscriber lists (`newsletter.subscribers.read_csv`)."""
# Not both_engines: CSV parsing, no database.

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.errors import ImportRefused, SubscriberError
from newsletter.subscribers import (
    check_address,
    parse_status,
    parse_topics,
    read_csv,
)

HEADER = "email,name,topics,status\n"


def rows(path: Path, settings) -> list:
    return list(read_csv(path, settings.topic_slugs))


def write(tmp_path: Path, text: str | bytes, name: str = "subscribers.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def refusal(path: Path, settings) -> str:
    with pytest.raises(ImportRefused) as caught:
        rows(path, settings)
    return str(caught.value)


# The example file ---------------------------------------------------------------------------


def test_example_file_is_valid_and_covers_every_case(workspace, settings):
    parsed = rows(workspace / "subscribers.example.csv", settings)
    assert 20 <= len(parsed) <= 30
    assert all(row.ok for row in parsed), [p for row in parsed for p in row.problems]
    by_email = {row.email: row for row in parsed}
    names = [row.name for row in parsed]
    assert any("," in name for name in names), "a quoted name with a comma"
    assert any(not name.isascii() for name in names), "a non-ASCII name"
    assert "ingrid.solberg@example.net" in by_email, "a mixed-case address, stored lower case"
    raw = (workspace / "subscribers.example.csv").read_text(encoding="utf-8")
    assert "Ingrid.Solberg@Example.NET" in raw
    assert any(",all," in line for line in raw.splitlines()), "topics 'all'"
    assert any(",," in line for line in raw.splitlines()), "empty topics"
    assert any(row.topics.count(";") >= 2 for row in parsed), "several topics"
    assert {"unsubscribed", "bounced", "complained"} <= {row.status for row in parsed}
    domains = {row.email.split("@")[1] for row in parsed}
    assert domains <= {"example.org", "example.com", "example.net"}


# What is accepted ---------------------------------------------------------------------------


def test_fields_are_parsed_and_normalised(tmp_path, settings):
    path = write(
        tmp_path,
        HEADER + "  Ana.Lopez@Example.ORG ,  Ana López ,Genetics ; infections,Unsubscribed\n"
        'b@example.org,"Baptiste, Tom",all,\n'
        "c@example.org,,,subscribed\n",
    )
    ana, tom, empty = rows(path, settings)
    assert (ana.line, ana.email, ana.name) == (2, "ana.lopez@example.org", "Ana López")
    assert (ana.topics, ana.status) == ("genetics;infections", "unsubscribed")
    assert (tom.name, tom.topics, tom.status) == ("Baptiste, Tom", "all", "subscribed")
    assert (empty.name, empty.topics, empty.status) == ("", "all", "subscribed")
    assert all(row.ok for row in (ana, tom, empty))


def test_bom_and_crlf_line_ends(tmp_path, settings):
    text = "email,name,topics,status\r\na@example.org,Ann,genetics,\r\nb@example.org,Bo,all,\r\n"
    path = write(tmp_path, codecs.BOM_UTF8 + text.encode("utf-8"))
    parsed = rows(path, settings)
    assert [(r.line, r.email, r.name, r.topics) for r in parsed] == [
        (2, "a@example.org", "Ann", "genetics"),
        (3, "b@example.org", "Bo", "all"),
    ]


def test_columns_in_any_order_and_optional(tmp_path, settings):
    path = write(tmp_path, " Status , EMAIL\nbounced,a@example.org\n")
    (row,) = rows(path, settings)
    assert (row.email, row.status) == ("a@example.org", "bounced")
    # Columns the file does not have are None: the import leaves those fields alone.
    assert row.name is None and row.topics is None


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path, settings):
    path = write(
        tmp_path,
        HEADER + '\na@example.org,A,,\n,,,\nb@example.org,"Two\nlines",,\nc@example.org,C,,\n',
    )
    parsed = rows(path, settings)
    assert [(r.line, r.email) for r in parsed] == [
        (3, "a@example.org"),
        (5, "b@example.org"),
        (7, "c@example.org"),
    ]
    assert parsed[1].problems == (f"{display(path)}:5: name 'Two\\nlines' contains a line break",)
    assert parsed[0].ok and parsed[2].ok


def display(path: Path) -> str:
    from newsletter.config import display_path

    return display_path(path)


# Bad rows: reported on the row, with file and line ---------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a@b,A,,", "email 'a@b' is not a valid address: The part after the @-sign is not valid"),
        ("a@@b.org,A,,", "email 'a@@b.org' is not a valid address"),
        ("a b@c.org,A,,", "email 'a b@c.org' is not a valid address"),
        (",A,,", "email is empty"),
        (
            "a@example.org,Lopez, Ana,,",
            '5 fields, but the header has 4 (a name with a comma must be in double quotes: "Lopez, Ana")',
        ),
        ("a@example.org,A", "2 fields, but the header has 4"),
        ('a@example.org,"Ana\nLopez",,', "name 'Ana\\nLopez' contains a line break"),
        ("a@example.org,A\tB,,", "name 'A\\tB' contains a control character"),
        ("a@example.org,A,cooking,", "unknown topic 'cooking' (known topics: treatment-safety, "),
        ("a@example.org,A,all;genetics,", "topics: 'all' cannot be combined with other topics"),
        ("a@example.org,A,,maybe", "unknown status 'maybe' (expected subscribed, unsubscribed, "),
        ('a@example.org,"unclosed,,', "a quoted field is never closed"),
        ('a@example.org,"A"B,,', "not valid CSV: ',' expected after '\"'"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, settings, line, expected):
    path = write(tmp_path, HEADER + "ok@example.org,OK,,\n" + line + "\n")
    good, bad = rows(path, settings)
    assert good.ok
    assert not bad.ok and bad.line == 3
    assert any(p.startswith(f"{display(path)}:3: {expected}") for p in bad.problems), bad.problems


def test_every_problem_of_a_row_is_listed(tmp_path, settings):
    path = write(tmp_path, HEADER + "a@@b.org,A,cooking,maybe\n")
    (row,) = rows(path, settings)
    assert len(row.problems) == 3
    assert [p.split(": ", 1)[1].split(" ")[0:2] for p in row.problems] == [
        ["email", "'a@@b.org'"],
        ["unknown", "topic"],
        ["unknown", "status"],
    ]


def test_latin1_row_is_reported_with_its_line(tmp_path, settings):
    data = (HEADER + "a@example.org,Ana,,\nb@example.org,José,,\nc@example.org,Cy,,\n").encode(
        "latin-1"
    )
    path = write(tmp_path, data)
    a, b, c = rows(path, settings)
    assert a.ok and c.ok
    assert b.problems == (
        f"{display(path)}:3: not UTF-8 text (byte 0xe9 at column 18): save the file as UTF-8 "
        "('CSV UTF-8' in Excel)",
    )


# Bad files: refused as a whole -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty (expected the header 'email,name,topics,status'"),
        (b"\n\n  \n", "the file is empty"),
        (codecs.BOM_UTF8, "the file is empty"),
        (b"name,topics\nAna,all\n", ":1: no 'email' column in the header"),
        (
            b"emial,name\na@example.org,A\n",
            ":1: unknown column 'emial' (expected columns: email, name, topics, status); did you mean 'email'?",
        ),
        (b"email,nmae\na@example.org,A\n", "did you mean 'name'?"),
        (b"email,name,email\n", ":1: column 'email' appears twice in the header"),
        (b"email,name,topics,status,\n", ":1: a column has no name"),
        (b"email;name;topics;status\na@example.org;A;;\n", "columns must be separated by commas"),
        (b"a@example.org,Ana,all,subscribed\n", ":1: the header line is missing"),
        (b'{"subscribers": [{"email": "a@example.org"}]}\n', "not a subscribers CSV"),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01",
            ":1: not a CSV text file: not UTF-8 text",
        ),
        ("email,name\n".encode("utf-16"), "the file is UTF-16 text; save it as UTF-8"),
    ],
)
def test_bad_file_is_refused_with_a_clear_message(tmp_path, settings, content, expected):
    path = write(tmp_path, content)
    message = refusal(path, settings)
    assert message.startswith(display(path))
    assert expected in message


def test_missing_file(tmp_path, settings):
    assert refusal(tmp_path / "nope.csv", settings).endswith("nope.csv: file not found")


def test_a_folder_is_not_a_file(tmp_path, settings):
    assert "is a folder, not a CSV file" in refusal(tmp_path, settings)


def test_file_is_streamed_not_read_whole(tmp_path, settings):
    path = write(tmp_path, HEADER + "".join(f"u{i}@example.org,,,\n" for i in range(1000)))
    stream = read_csv(path, settings.topic_slugs)
    first = next(stream)
    assert first.email == "u0@example.org"
    stream.close()  # closes the file


# Field parsers ---------------------------------------------------------------------------------


def test_parse_topics(settings):
    known = settings.topic_slugs
    assert parse_topics("", known) == "all"
    assert parse_topics(" ALL ", known) == "all"
    assert parse_topics("genetics; Infections,genetics", known) == {"genetics", "infections"}
    assert parse_topics(["genetics"], known) == {"genetics"}
    with pytest.raises(SubscriberError, match=r"unknown topic 'cooking', 'knitting' \(known"):
        parse_topics("cooking;knitting;genetics", known)


def test_parse_status():
    assert parse_status("") == "subscribed"
    assert parse_status(" Bounced ") == "bounced"
    with pytest.raises(SubscriberError, match="unknown status 'maybe'"):
        parse_status("maybe")


ADDRESSES = [
    "Ana.Lopez@Example.ORG",
    "postmaster@example.org",
    "PostMaster@Example.org",
    "o'brien+news@example.co.uk",
    "x@sub-domain.example.com",
    "a@example.test",  # special-use domain: refused
    "a@localhost",
    "a@b",
    "a@@b.org",
    "a b@c.org",
    "a..b@example.org",
    ".a@example.org",
    "a@-example.org",
    "a@example-.org",
    "a@example..org",
    "a@example.org.",
    "a@xn--exmple-cua.org",  # IDNA: kept in the ASCII form
    "a@EXÄMPLE.org",
    "José@example.org",
    '"quoted"@example.org',
    "Ana <a@example.org>",
    "a@[127.0.0.1]",
    "a@123.example",
    "a@example.123",
    "a" * 64 + "@example.org",
    "a" * 65 + "@example.org",
    "a@" + "b" * 63 + ".org",
    "a@" + "b" * 64 + ".org",
    "a@" + ".".join(["b" * 60] * 4) + ".org",
    "a@" + ".".join(["b" * 61] * 4) + ".org",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_check_address_agrees_with_email_validator(address):
    # check_address caches domain verdicts for speed; its answers must be email-validator's
    # without SMTPUTF8 (internationalised domains in their ASCII form).
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        expected = (valid.ascii_email.lower(), None)
    except EmailNotValidError as exc:
        expected = (None, str(exc))
    assert check_address(address) == expected
    assert check_address(address) == expected  # and again, from the cache
