"""What the preference centre changes: a subscriber's topics from the form, unsubscribe,
subscribe again. Every change is recorded in the history with source `web`; whether a status
may change is `newsletter.subscribers.rules`' to decide. Saving topics never changes the status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Settings
from ..errors import SubscriberError
from ..store import Database
from ..store import subscribers as subscriber_rows
from ..store.subscribers import ALL, Subscriber, TopicChoice
from ..subscribers import rules
from ..subscribers.fields import parse_topics


class NoTopicChosen(SubscriberError):
    """The form was saved with no topic ticked."""


@dataclass(frozen=True)
class TopicRow:
    slug: str
    label: str
    description: str
    checked: bool


def topic_rows(settings: Settings, choice: TopicChoice) -> list[TopicRow]:
    """Every topic of the vocabulary, ticked when the choice includes it ("all" ticks every one)."""
    return [
        TopicRow(t.slug, t.label, t.description, choice == ALL or t.slug in choice)
        for t in settings.topics
    ]


def chosen_topics(
    settings: Settings,
    current: TopicChoice,
    choice: str | None,
    ticked: Iterable[str],
    shown: str | None = None,
) -> TopicChoice:
    """The topic choice a submitted form asks for.

    `choice` is the radio ("all" or "chosen"), `ticked` the ticked topic slugs, `shown` which
    radio the page showed. Only topics of the vocabulary are read from the form; a topic the
    subscriber has that the settings no longer name was not shown, so it is kept as it is.
    Someone shown "all" who unticks topics but leaves the radio alone gets the ticked topics:
    the boxes are what they touched. Raises NoTopicChosen when no shown topic is ticked.
    """
    known = settings.topic_slugs
    # A box the page did not show (a forged or stale form) is ignored, not refused.
    shown_ticked = [slug for slug in ticked if slug in known]
    picked = parse_topics(shown_ticked, known) if shown_ticked else frozenset()
    if choice == "all" and not (shown == "all" and picked != set(known)):
        return ALL
    if not picked:
        raise NoTopicChosen("Please tick at least one topic.")
    hidden = set() if current == ALL else set(current) - set(known)
    return frozenset(picked | hidden)


def save_topics(db: Database, subscriber: Subscriber, topics: TopicChoice) -> bool:
    return subscriber_rows.write_topics(db, subscriber.id, topics, "web")


def unsubscribe(db: Database, subscriber: Subscriber, reason: str) -> bool:
    """Unsubscribe someone subscribed; any other status (a bounce too) stays as it is."""
    outcome = rules.change(db, subscriber, rules.Source.UNSUBSCRIBE_PAGE, "unsubscribed", reason)
    return outcome == "changed"


def can_resubscribe(db: Database, subscriber: Subscriber) -> bool:
    """Only someone who unsubscribed may come back by a link: a spam complaint, a bounce or an
    invalid address (even under a later unsubscribe) is for an admin to clear, not for whoever
    holds a forwarded email."""
    return rules.may(db, subscriber, rules.Source.SUBSCRIBE_AGAIN, "subscribed")


def resubscribe(db: Database, subscriber: Subscriber) -> str:
    """The explicit "Subscribe again": `changed`, `unchanged` (already subscribed) or `refused`."""
    try:
        return rules.change(
            db,
            subscriber,
            rules.Source.SUBSCRIBE_AGAIN,
            "subscribed",
            "subscribed again on the preference page",
        )
    except rules.StatusRefused:
        return "refused"


def stopped_because(db: Database, subscriber: Subscriber) -> str:
    """Why no email goes to this subscriber (empty when subscribed); a bounce, complaint or
    invalid address under a later unsubscribe is named, since it is why no link restarts it."""
    return STOPPED_BECAUSE.get(rules.holding(db, subscriber) or subscriber.status, "")


STOPPED_BECAUSE = {
    "bounced": "Our emails to this address bounced, so we stopped sending them.",
    "complained": "An email to this address was marked as spam, so we stopped sending them.",
    "invalid": "Our email provider reported this address as invalid, so we stopped sending.",
    "unsubscribed": "This address is unsubscribed.",
    "subscribed": "",
}
