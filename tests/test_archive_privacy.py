"""The archive holds nothing about subscribers: after a real send to the example subscribers, no
built file contains any subscriber's address, name or id, any token of the sent messages, or
anything else the ledger knows beyond "this issue was sent on this date"."""
# Not both_engines: what built files hold (the build on both: test_archive_build); ids set
# by hand here, which PostgreSQL's identity column does not follow.

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, urlsplit

import markupsafe

from tests.archive_support import FIRST_ISSUE, build, import_example_subscribers, send, site_files

# Subscriber ids in the tens of millions: a number that could never be in a page by chance.
FIRST_ID = 73_914_260


def spellings(value: str) -> set[str]:
    """The ways a value could land in a page, a feed, JSON or a URL, lower case."""
    forms = {
        value,
        html.escape(value, quote=True),
        str(markupsafe.escape(value)),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value, safe="@"),
    }
    return {form.lower() for form in forms if form}


def tokens_of(message) -> set[str]:
    """The signed tokens in one sent message: the last path segment of its personal links."""
    links = set(re.findall(r"https?://\S+", message.get_body(("plain",)).get_content()))
    links.add(message["List-Unsubscribe"].strip("<>"))
    personal = [url for url in links if "/preferences/" in url or "/unsubscribe/" in url]
    assert len(personal) >= 2
    return {urlsplit(url).path.rsplit("/", 1)[-1] for url in personal}


def test_no_subscriber_data_in_any_archive_file(run, workspace, db):
    # A first subscriber with a distinctive id; the example list is imported after it.
    with db.transaction():
        db.conn.execute(
            "INSERT INTO subscribers (id, email, name, topics, status, created_at, updated_at) "
            "VALUES (?, 'first.reader@example.org', 'Firstname Lastreader', 'all', 'subscribed', "
            "'2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z')",
            (FIRST_ID,),
        )
    import_example_subscribers(run)
    messages = send(run, workspace, FIRST_ISSUE)
    build(run)

    people = db.conn.execute("SELECT id, email, name FROM subscribers").fetchall()
    assert len(people) == 26
    assert len(messages) >= 15  # everyone subscribed got the issue
    secrets: dict[str, str] = {}
    for person in people:
        secrets[f"address of subscriber {person['id']}"] = person["email"]
        if person["name"]:
            secrets[f"name of subscriber {person['id']}"] = person["name"]
    for subscriber_id, message in messages.items():
        for token in tokens_of(message):
            secrets[f"token sent to subscriber {subscriber_id}"] = token
        secrets[f"message id of subscriber {subscriber_id}"] = message["Message-ID"].strip("<>")
    ledger = db.conn.execute("SELECT segment, provider_id FROM ledger").fetchall()
    for row in ledger:
        if row["segment"]:
            secrets[f"segment key {row['segment']}"] = row["segment"]
        secrets[f"provider id {row['provider_id']}"] = row["provider_id"]
    ids = {person["id"] for person in people}
    assert min(ids) == FIRST_ID

    files = site_files(workspace / "site")
    assert len(files) > 15
    found = []
    for name, data in files.items():
        text = data.decode("utf-8").lower()
        for what, value in secrets.items():
            if any(form in text for form in spellings(value)):
                found.append(f"{name}: {what}")
        for subscriber_id in ids:
            if re.search(rf"(?<!\d){subscriber_id}(?!\d)", text):
                found.append(f"{name}: id of subscriber {subscriber_id}")
        # No email address of any kind, and nothing signed (no token-like long strings).
        found += [f"{name}: address {a}" for a in re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", text)]
    assert found == []
    # The one thing the archive does take from the ledger: the day the issue was sent.
    index = files["index.html"].decode("utf-8")
    assert re.search(r"Sent <time datetime=\"\d{4}-\d\d-\d\d\">", index)
