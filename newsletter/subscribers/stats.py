"""Counts of the list: subscribers per status, and per topic among the subscribed."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..store import Database
from ..store import subscribers as subscriber_rows
from ..store.subscribers import ALL, decode_topics
from .fields import STATUSES, SUBSCRIBED


@dataclass(frozen=True)
class TopicCount:
    slug: str
    label: str
    chosen: int  # subscribed subscribers who chose this topic
    via_all: int  # subscribed subscribers who chose "all"

    @property
    def total(self) -> int:
        return self.chosen + self.via_all


@dataclass
class SubscriberStats:
    """Counts per status, and per topic among the subscribed."""

    by_status: dict[str, int]
    all_topics: int  # subscribed with "all"
    by_topic: list[TopicCount]  # in the settings' order
    unknown_topics: dict[str, int]  # topic no longer in the settings → subscribers holding it
    no_known_topic: int  # subscribed whose every topic is unknown: they match nothing

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def subscribed(self) -> int:
        return self.by_status.get(SUBSCRIBED, 0)


def stats(db: Database, settings: Settings) -> SubscriberStats:
    """Subscribers per status and per topic; topics the settings no longer name are reported apart."""
    known = settings.topic_slugs
    counts = subscriber_rows.count_by_status(db)
    by_status = {status: counts.get(status, 0) for status in STATUSES}
    chosen = dict.fromkeys(known, 0)
    all_topics = no_known = 0
    for encoded, n in subscriber_rows.count_by_topics(db, SUBSCRIBED).items():
        topics = decode_topics(encoded)
        if topics == ALL:
            all_topics += n
            continue
        matching = topics.intersection(known)
        if not matching:
            no_known += n
        for slug in matching:
            chosen[slug] += n
    unknown: dict[str, int] = {}
    for encoded, n in subscriber_rows.count_by_topics(db, None).items():
        topics = decode_topics(encoded)
        if topics != ALL:
            for slug in sorted(topics.difference(known)):
                unknown[slug] = unknown.get(slug, 0) + n
    labels = settings.topic_labels
    by_topic = [TopicCount(slug, labels[slug], chosen[slug], all_topics) for slug in known]
    return SubscriberStats(by_status, all_topics, by_topic, dict(sorted(unknown.items())), no_known)
