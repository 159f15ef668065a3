"""The one place that decides a subscriber's status change: which source may turn which status
into which. Every path asks here (CSV import, the admin's commands, the preference centre, the
unsubscribe page and one-click POST, SendGrid's event webhook and suppression sync, the signup
form's confirmation), and the SQL that writes a status (`newsletter.store.subscribers`) is called
from nowhere else. Topics are not a status: saving topics never changes one.

| source | new address | subscribed | unsubscribed | unsubscribed, held¹ | bounced | invalid | complained | otherwise |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| import | any | unsubscribed, bounced, invalid, complained | complained | complained | unsubscribed, complained | unsubscribed, complained | — | kept, counted in the summary |
| import --resubscribe | any | any | any | any | any | any | any | — |
| admin add | subscribed | — | — | — | — | — | — | refused: already a subscriber |
| admin set-topics | · | — | — | — | — | — | — | topics only |
| admin unsubscribe | · | unsubscribed | — | — | — | — | — | kept: "already …, nothing changed" |
| admin resubscribe | · | — | subscribed | — | — | — | — | refused: needs --force |
| admin resubscribe --force --reason TEXT | · | — | subscribed | subscribed | subscribed | subscribed | subscribed | — |
| preference page save | · | — | — | — | — | — | — | topics only |
| preference page "Subscribe again" | · | — | subscribed | — | — | — | — | refused: "write to us" (409) |
| unsubscribe page / one-click POST | · | unsubscribed | — | — | — | — | — | kept: "no more email" |
| event webhook | · | unsubscribed, bounced, invalid, complained² | complained | complained | unsubscribed, complained | unsubscribed, complained | — | kept |
| suppression sync | · | unsubscribed, bounced, invalid, complained² | complained | complained | unsubscribed, complained | unsubscribed, complained | — | kept |
| signup confirm | subscribed | — | subscribed | — | — | — | — | refused: "write to us" (409), nothing sent |

Each cell lists the new statuses that source may give a subscriber in that status ("any": all
five; "—": none; "·": the source never meets it). Asking for the status one already has changes
nothing and says so (only `add` refuses any existing address). Every change is one history row
(field `status`, old and new value, the source as `import`, `cli`, `web`, `sendgrid` or `signup`,
a reason).

The order behind the import and SendGrid rows: subscribed < bounced = invalid < unsubscribed <
complained (STRENGTH). These never weaken a status; equal ranks keep what is there. A person's own
choice (an unsubscribe, a spam complaint) outranks a technical stop (a bounce, an invalid address),
so that it survives when an admin later clears the technical stop.

¹ held: the history shows a bounce, a complaint or an invalid address since the subscriber was last
  subscribed, which no admin has cleared (an unsubscribe that came after a bounce, say). Only
  `newsletter subscribers resubscribe --force --reason TEXT` (or an import with --resubscribe)
  clears a bounce, a complaint or an invalid address; no web link does.
² unless the subscriber came back to `subscribed` after SendGrid recorded it (strictly later, by
  the second): an old list entry or a late event never undoes a resubscribe. An entry without a
  date counts as new.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from ..errors import SubscriberError
from ..store import Database
from ..store import subscribers as subscriber_rows
from ..store.migrations import SUBSCRIBER_STATUSES
from ..store.subscribers import Subscriber, TopicChoice

SUBSCRIBED, UNSUBSCRIBED, BOUNCED, COMPLAINED, INVALID = (
    "subscribed",
    "unsubscribed",
    "bounced",
    "complained",
    "invalid",
)
STATUSES = SUBSCRIBER_STATUSES  # a status added there needs its row and column here

# How strongly a status keeps mail away (see the module docstring).
STRENGTH = {SUBSCRIBED: 0, BOUNCED: 1, INVALID: 1, UNSUBSCRIBED: 2, COMPLAINED: 3}
# Stops that only an admin clears: no web link, no import without --resubscribe.
HOLDS = frozenset({BOUNCED, INVALID, COMPLAINED})
HOLD_NAMES = {BOUNCED: "a bounce", INVALID: "an invalid address", COMPLAINED: "a spam complaint"}

ANY = frozenset(STATUSES)
NONE: frozenset[str] = frozenset()


class Source(StrEnum):
    """Who asks for a status change: one row of the table."""

    IMPORT = "import"
    IMPORT_RESUBSCRIBE = "import --resubscribe"
    ADMIN_ADD = "admin add"
    ADMIN_SET_TOPICS = "admin set-topics"
    ADMIN_UNSUBSCRIBE = "admin unsubscribe"
    ADMIN_RESUBSCRIBE = "admin resubscribe"
    ADMIN_FORCE = "admin resubscribe --force --reason TEXT"
    PREFERENCES_SAVE = "preference page save"
    SUBSCRIBE_AGAIN = 'preference page "Subscribe again"'
    UNSUBSCRIBE_PAGE = "unsubscribe page / one-click POST"
    WEBHOOK = "event webhook"
    SYNC = "suppression sync"
    SIGNUP_CONFIRM = "signup confirm"


# What the history's `source` column says for each (the store's five sources).
HISTORY_SOURCE: dict[Source, subscriber_rows.HistorySource] = {
    Source.IMPORT: "import",
    Source.IMPORT_RESUBSCRIBE: "import",
    Source.ADMIN_ADD: "cli",
    Source.ADMIN_SET_TOPICS: "cli",
    Source.ADMIN_UNSUBSCRIBE: "cli",
    Source.ADMIN_RESUBSCRIBE: "cli",
    Source.ADMIN_FORCE: "cli",
    Source.PREFERENCES_SAVE: "web",
    Source.SUBSCRIBE_AGAIN: "web",
    Source.UNSUBSCRIBE_PAGE: "web",
    Source.WEBHOOK: "sendgrid",
    Source.SYNC: "sendgrid",
    Source.SIGNUP_CONFIRM: "signup",
}
# Sources whose refusal is an error the user sees; the others keep the status quietly.
# (`add` refuses an existing address before it asks: `newsletter.subscribers.add`.)
REFUSING = frozenset(
    {Source.ADMIN_ADD, Source.ADMIN_RESUBSCRIBE, Source.SUBSCRIBE_AGAIN, Source.SIGNUP_CONFIRM}
)


class StatusRefused(SubscriberError):
    """A source asked for a status change that the rules do not allow it; nothing changed."""


def stronger_than(status: str) -> frozenset[str]:
    return frozenset(s for s in STATUSES if STRENGTH[s] > STRENGTH[status])


def allowed(source: Source, current: str | None, held: bool = False) -> frozenset[str]:
    """The new statuses `source` may give a subscriber whose status is `current`.

    `current` None is a new address; `held` means `current` is `unsubscribed` over a bounce,
    complaint or invalid address that no admin has cleared (see `holding`).
    """
    if current is None:
        if source in (Source.IMPORT, Source.IMPORT_RESUBSCRIBE):
            return ANY
        joins = source in (Source.ADMIN_ADD, Source.SIGNUP_CONFIRM)
        return frozenset({SUBSCRIBED}) if joins else NONE
    match source:
        case Source.IMPORT | Source.WEBHOOK | Source.SYNC:
            return stronger_than(current)
        case Source.IMPORT_RESUBSCRIBE:
            return ANY
        case Source.ADMIN_UNSUBSCRIBE | Source.UNSUBSCRIBE_PAGE:
            return frozenset({UNSUBSCRIBED}) if current == SUBSCRIBED else NONE
        case Source.ADMIN_RESUBSCRIBE | Source.SUBSCRIBE_AGAIN | Source.SIGNUP_CONFIRM:
            return frozenset({SUBSCRIBED}) if current == UNSUBSCRIBED and not held else NONE
        case Source.ADMIN_FORCE:
            return frozenset({SUBSCRIBED}) if current != SUBSCRIBED else NONE
    return NONE  # add (of an existing address), set-topics, the preference page's save


Verdict = Literal["change", "same", "keep", "refuse"]


def decide(source: Source, current: str | None, wanted: str, held: bool = False) -> Verdict:
    """What asking for `wanted` does: change it, nothing (`same`: already so), keep the current
    status quietly, or refuse (an error for the user)."""
    if wanted not in STATUSES:
        raise SubscriberError(f"unknown status {wanted!r} (expected one of {', '.join(STATUSES)})")
    if wanted == current:
        return "same"
    if wanted in allowed(source, current, held):
        return "change"
    return "refuse" if source in REFUSING else "keep"


def holding(db: Database, subscriber: Subscriber) -> str | None:
    """The stop that only an admin clears, if one holds: the status itself when bounced,
    complained or invalid; for an unsubscribed subscriber, the last bounce, complaint or invalid
    address in the history since they were last subscribed. None otherwise."""
    if subscriber.status in HOLDS:
        return subscriber.status
    if subscriber.status != UNSUBSCRIBED:
        return None
    hold = None
    for row in subscriber_rows.history_rows(db, subscriber.id):
        if row["field"] not in ("created", "status"):
            continue
        if row["new_value"] in HOLDS:
            hold = row["new_value"]
        elif row["new_value"] == SUBSCRIBED:
            hold = None  # they were subscribed since: an admin cleared it
    return hold


def is_held(subscriber: Subscriber, hold: str | None) -> bool:
    """The `held` of the table: unsubscribed, over a hold (see `holding`)."""
    return subscriber.status == UNSUBSCRIBED and hold is not None


def may(db: Database, subscriber: Subscriber, source: Source, wanted: str) -> bool:
    """Whether asking for `wanted` would change the status (for offering a button or not)."""
    held = is_held(subscriber, holding(db, subscriber))
    return decide(source, subscriber.status, wanted, held) == "change"


def came_back_after(db: Database, subscriber: Subscriber, at: str | None) -> bool:
    """Whether the subscriber's latest status change was a return to `subscribed`, strictly
    after `at` (ISO). Without a date nothing can be older than the return: False."""
    if at is None or subscriber.status != SUBSCRIBED:
        return False
    changes = [h for h in subscriber_rows.history_rows(db, subscriber.id) if h["field"] == "status"]
    # Someone subscribed whose status ever changed: their last change was the return.
    return bool(changes) and changes[-1]["at"] > at


Outcome = Literal["changed", "unchanged", "kept", "stale"]


def change(
    db: Database,
    subscriber: Subscriber | int,
    source: Source,
    wanted: str,
    reason: str | None = None,
    *,
    at: str | None = None,
) -> Outcome:
    """Ask for a status change and make it when the rules allow it.

    Returns `changed`; `unchanged` (already that status); `kept` (the rules keep the current
    one); `stale` (a SendGrid report dated `at`, older than the subscriber's return). Raises
    StatusRefused when a refusing source is not allowed. Decided on the status as it is in
    the database now, in the same transaction as the write, not on the caller's copy.
    """
    sid = subscriber if isinstance(subscriber, int) else subscriber.id
    if source == Source.ADMIN_FORCE and not (reason or "").strip():
        raise SubscriberError(
            "--force needs --reason TEXT: say why the bounce, complaint or invalid address is "
            "cleared (it is kept in the history)"
        )
    with db.transaction():
        current = subscriber_rows.get_row(db, sid)
        if current is None:
            raise SubscriberError(f"no subscriber with id {sid}")
        hold = holding(db, current)
        verdict = decide(source, current.status, wanted, held=is_held(current, hold))
        if verdict == "refuse":
            raise StatusRefused(_refusal(source, current, hold))
        if verdict != "change":
            return "unchanged" if verdict == "same" else "kept"
        if came_back_after(db, current, at):  # `at` comes only with a SendGrid report
            return "stale"
        if source == Source.ADMIN_FORCE:
            reason = f"--force: {reason.strip()}"
        subscriber_rows.write_status(db, sid, wanted, HISTORY_SOURCE[source], reason)
    return "changed"


def _refusal(source: Source, subscriber: Subscriber, hold: str | None) -> str:
    email, status = subscriber.email, subscriber.status
    if source == Source.ADMIN_ADD:
        return f"{email} is already a subscriber (status {status})"
    if hold is None:
        return f"{email} is {status}: nothing to resubscribe from"
    what = HOLD_NAMES[hold]
    was = f"{email} is {status}" + ("" if status == hold else f" after {what}")
    return (
        f"{was}: only an admin clears {what}, with "
        "`newsletter subscribers resubscribe --force --reason TEXT`"
    )


def create(
    db: Database,
    source: Source,
    email: str,
    name: str,
    topics: TopicChoice,
    status: str = SUBSCRIBED,
    reason: str | None = None,
) -> Subscriber:
    """Add a new subscriber with `status`, when the source may create one with it (the caller
    has validated the address, name and topics)."""
    if decide(source, None, status) != "change":
        raise StatusRefused(f"{source} cannot add a subscriber as {status}")
    return subscriber_rows.insert(
        db,
        email,
        name=name,
        topics=topics,
        status=status,
        source=HISTORY_SOURCE[source],
        reason=reason,
    )


def write_import(db: Database, batch: subscriber_rows.ImportBatch, at: str) -> None:
    """Write one page of an import whose statuses were decided here (`decide`, per row)."""
    subscriber_rows.write_import_batch(db, batch, at, HISTORY_SOURCE[Source.IMPORT])
