"""The admin's operations on one subscriber at a time, and the list: find, add, set topics,
unsubscribe, resubscribe, history, list. Each raises SubscriberError (a refusal the user sees)
where the store would return None; every status change goes through `subscribers.rules`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..config import Settings
from ..errors import SubscriberError
from ..store import Database, IntegrityError
from ..store import subscribers as subscriber_rows
from ..store.subscribers import ALL, Subscriber
from . import rules
from .fields import STATUSES, SUBSCRIBED, check_name, normalise_address, parse_topics


def get(db: Database, subscriber_id: int) -> Subscriber:
    """The subscriber with this id; SubscriberError when there is none."""
    found = subscriber_rows.get_row(db, subscriber_id)
    if found is None:
        raise SubscriberError(f"no subscriber with id {subscriber_id}")
    return found


def find(db: Database, email: str) -> Subscriber:
    """The subscriber with this address (any case); SubscriberError when there is none."""
    found = subscriber_rows.get_row_by_email(db, email)
    if found is None:
        raise SubscriberError(f"no subscriber with the address {email.strip()!r}")
    return found


def _resolve(db: Database, who: int | str | Subscriber) -> Subscriber:
    if isinstance(who, Subscriber):
        return who
    if isinstance(who, int):
        return get(db, who)
    return find(db, who)


def add(
    db: Database,
    settings: Settings,
    email: str,
    name: str = "",
    topics: str | Iterable[str] = ALL,
) -> Subscriber:
    """Add a new subscribed subscriber; SubscriberError when the address exists (whatever its status)."""
    address = normalise_address(email)
    name = check_name(name or "")
    choice = parse_topics(topics, settings.topic_slugs)
    existing = subscriber_rows.get_row_by_email(db, address)
    if existing is not None:
        raise SubscriberError(
            f"{address} is already a subscriber (status {existing.status}); "
            "use set-topics to change topics, or resubscribe"
        )
    try:
        return rules.create(db, rules.Source.ADMIN_ADD, address, name, choice)
    except IntegrityError:  # added by someone else in between
        raise SubscriberError(f"{address} is already a subscriber") from None


def set_topics(
    db: Database,
    settings: Settings,
    who: int | str | Subscriber,
    topics: str | Iterable[str],
    source: subscriber_rows.HistorySource,
) -> bool:
    """Replace a subscriber's topics (by id or address); False when unchanged. Never touches status."""
    choice = parse_topics(topics, settings.topic_slugs)
    return subscriber_rows.write_topics(db, _resolve(db, who).id, choice, source)


def unsubscribe(db: Database, who: int | str | Subscriber, reason: str | None = None) -> bool:
    """The admin's unsubscribe; False (nothing changed) when not subscribed, keeping a bounce or
    complaint as it is."""
    sub = _resolve(db, who)
    return (
        rules.change(db, sub, rules.Source.ADMIN_UNSUBSCRIBE, "unsubscribed", reason) == "changed"
    )


def resubscribe(
    db: Database, who: int | str | Subscriber, reason: str | None = None, *, force: bool = False
) -> bool:
    """The admin's resubscribe; False when already subscribed.

    Without `force` only someone who unsubscribed comes back; clearing a bounce, a spam
    complaint or an invalid address needs `force` and a `reason` (kept in the history).
    StatusRefused (a SubscriberError) says which.
    """
    sub = _resolve(db, who)
    source = rules.Source.ADMIN_FORCE if force else rules.Source.ADMIN_RESUBSCRIBE
    return rules.change(db, sub, source, SUBSCRIBED, reason) == "changed"


def iter_subscribed(db: Database, page_size: int = 1000) -> Iterator[Subscriber]:
    """Every subscribed subscriber, by id, streamed in pages (never the whole list in memory)."""
    return subscriber_rows.iter_subscribers(db, SUBSCRIBED, page_size)


def _list_filters(settings: Settings, topic: str | None, status: str | None) -> dict:
    if status is not None and status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
    if topic is None:
        return {"status": status}
    topic = topic.strip().lower()
    # A topic the settings name matches those who chose it or "all"; a topic the settings no
    # longer name matches only those who still hold it, so an admin can find and fix them.
    return {"status": status, "topic": topic, "topic_includes_all": topic in settings.topic_slugs}


def list_subscribers(
    db: Database, settings: Settings, topic: str | None = None, status: str | None = None
) -> Iterator[Subscriber]:
    """Subscribers (by id, streamed) with that status (None: any) who would get that topic."""
    return subscriber_rows.iter_subscribers(db, **_list_filters(settings, topic, status))


def count_subscribers(
    db: Database, settings: Settings, topic: str | None = None, status: str | None = None
) -> int:
    """How many subscribers `list_subscribers` with the same filters gives."""
    return subscriber_rows.count(db, **_list_filters(settings, topic, status))


def history(db: Database, who: int | str | Subscriber) -> tuple[Subscriber, list[dict]]:
    """The subscriber and every recorded change (at, field, old_value, new_value, source, reason)."""
    sub = _resolve(db, who)
    return sub, subscriber_rows.history_rows(db, sub.id)
