"""The preference page: every topic shown, exactly the shown topics saved, history source `web`."""

from __future__ import annotations

import re

import pytest

from newsletter.store import subscribers as store
from newsletter.tokens import LinkSigner
from newsletter.web.preferences import NoTopicChosen, chosen_topics
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.both_engines

SIGNER = LinkSigner(TEST_SECRET)


def url(sub, purpose="preferences"):
    return f"/{purpose}/{SIGNER.sign(sub.id, purpose)}"


def checked_boxes(html: str) -> set[str]:
    return {
        m.group(1)
        for m in re.finditer(
            r'<input type="checkbox" id="[^"]+" name="topics" value="([^"]+)" checked', html
        )
    }


def test_page_shows_address_and_every_topic(client, db, settings):
    sub = store.insert(db, "reader@example.com", topics={"genetics", "infections"})
    response = client.get(url(sub))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "reader@example.com" in html
    for topic in settings.topics:
        assert f'for="topic-{topic.slug}">{topic.label.replace(chr(39), "&#39;")}</label>' in html
        assert topic.description.replace("'", "&#39;") in html
    assert "All topics, including new ones" in html
    assert checked_boxes(html) == {"genetics", "infections"}
    assert 'id="choice-chosen" name="choice" value="chosen" checked' in html
    # Every form control has a label, inside a fieldset with a legend.
    assert html.count("<fieldset>") == 2 and html.count("<legend>") == 2
    for control_id in re.findall(r'<input type="(?:checkbox|radio)" id="([^"]+)"', html):
        assert f'<label for="{control_id}">' in html


def test_all_topics_subscriber_sees_everything_ticked(client, db, settings):
    sub = store.insert(db, "all@example.com", topics="all")
    html = client.get(url(sub)).get_data(as_text=True)
    assert checked_boxes(html) == set(settings.topic_slugs)
    assert 'id="choice-all" name="choice" value="all" checked' in html


def test_save_adds_and_drops_topics_and_records_history(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics", "infections"})
    response = client.post(
        url(sub),
        data={"shown": "chosen", "choice": "chosen", "topics": ["infections", "womens-health"]},
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Saved." in html and "You will get: Women&#39;s health, Infections and vaccines." in html
    assert store.get_row(db, sub.id).topics == {"infections", "womens-health"}
    change = store.history_rows(db, sub.id)[-1]
    assert change["field"] == "topics" and change["source"] == "web"
    assert change["old_value"] == "genetics;infections"
    assert change["new_value"] == "infections;womens-health"
    assert checked_boxes(html) == {"infections", "womens-health"}


def test_a_topic_the_settings_no_longer_name_is_kept(client, db):
    sub = store.insert(db, "old@example.com", topics={"genetics", "retired-topic"})
    html = client.get(url(sub)).get_data(as_text=True)
    assert "retired-topic" not in html
    client.post(url(sub), data={"shown": "chosen", "choice": "chosen", "topics": ["infections"]})
    assert store.get_row(db, sub.id).topics == {"infections", "retired-topic"}


def test_unknown_slugs_in_the_form_are_ignored(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    client.post(url(sub), data={"choice": "chosen", "topics": ["genetics", "made-up", "all"]})
    assert store.get_row(db, sub.id).topics == {"genetics"}


def test_no_topic_ticked_is_refused_and_points_to_unsubscribe(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    before = store.history_rows(db, sub.id)
    response = client.post(url(sub), data={"shown": "chosen", "choice": "chosen"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Please tick at least one topic." in html
    unsubscribe = re.search(r'role="alert".*?<a href="([^"]+)">unsubscribe</a>', html, re.S)
    assert unsubscribe and unsubscribe.group(1) == url(sub, "unsubscribe")
    assert store.get_row(db, sub.id).topics == {"genetics"}
    assert store.history_rows(db, sub.id) == before


def test_choosing_all_topics(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    # Ticking the radio is enough; the boxes below it do not narrow "all".
    response = client.post(
        url(sub), data={"shown": "chosen", "choice": "all", "topics": ["genetics"]}
    )
    assert "You will get every topic, including new ones we add." in response.get_data(as_text=True)
    assert store.get_row(db, sub.id).topics == "all"


def test_unticking_a_topic_while_all_is_selected_narrows_the_choice(client, db, settings):
    sub = store.insert(db, "reader@example.com", topics="all")
    kept = [s for s in settings.topic_slugs if s != "genetics"]
    client.post(url(sub), data={"shown": "all", "choice": "all", "topics": kept})
    assert store.get_row(db, sub.id).topics == frozenset(kept)
    # Everything ticked with "all": stays "all", so new topics keep coming.
    sub2 = store.insert(db, "all@example.com", topics="all")
    client.post(url(sub2), data={"shown": "all", "choice": "all", "topics": settings.topic_slugs})
    assert store.get_row(db, sub2.id).topics == "all"
    assert [h for h in store.history_rows(db, sub2.id) if h["source"] == "web"] == []


def test_chosen_topics_rules(settings):
    known = settings.topic_slugs
    assert chosen_topics(settings, "all", "all", known, "all") == "all"
    assert chosen_topics(settings, frozenset({"x"}), "chosen", ["genetics"], "chosen") == {
        "genetics",
        "x",
    }
    with pytest.raises(NoTopicChosen):
        chosen_topics(settings, "all", "all", [], "all")
    with pytest.raises(NoTopicChosen):
        chosen_topics(settings, frozenset({"x"}), "chosen", ["x"], "chosen")


def test_unsubscribed_subscriber_sees_subscribe_again(client, db):
    sub = store.insert(db, "gone@example.com", topics={"genetics"}, status="unsubscribed")
    html = client.get(url(sub)).get_data(as_text=True)
    assert "You are unsubscribed" in html
    form = re.search(
        r'<form method="post" action="([^"]+)">\s*<button[^>]*>Subscribe again</button>', html
    )
    assert form and form.group(1) == url(sub).replace("/preferences/", "/resubscribe/")

    response = client.post(form.group(1))
    assert response.status_code == 200
    assert "You are subscribed again" in response.get_data(as_text=True)
    now = store.get_row(db, sub.id)
    assert now.status == "subscribed" and now.status_source == "web"
    assert store.history_rows(db, sub.id)[-1]["new_value"] == "subscribed"
    assert store.get_row(db, sub.id).topics == {"genetics"}


def test_subscribe_again_with_these_topics_when_unsubscribed(client, db):
    sub = store.insert(db, "gone@example.com", topics={"genetics"}, status="unsubscribed")
    html = client.get(url(sub)).get_data(as_text=True)
    button = re.search(r'<button[^>]*name="([^"]+)" value="([^"]+)"[^>]*>([^<]+)</button>', html)
    assert button and button.group(3) == "Subscribe again with these topics"
    response = client.post(
        url(sub),
        data={"choice": "chosen", "topics": ["infections"], button.group(1): button.group(2)},
    )
    assert "Welcome back." in response.get_data(as_text=True)
    now = store.get_row(db, sub.id)
    assert now.status == "subscribed" and now.topics == {"infections"}
    assert store.history_rows(db, sub.id)[-1]["reason"] == "subscribed again on the preference page"


@pytest.mark.parametrize("status", ["complained", "bounced", "invalid"])
def test_no_resubscribe_by_link_after_a_complaint_or_bounce(client, db, status):
    sub = store.insert(db, "stopped@example.com", topics={"genetics"}, status=status)
    html = client.get(url(sub)).get_data(as_text=True)
    assert "Subscribe again" not in html
    assert "write to" in html
    response = client.post(url(sub).replace("/preferences/", "/resubscribe/"))
    assert response.status_code == 409
    assert store.get_row(db, sub.id).status == status
    # Topics can still be changed, the status stays.
    client.post(url(sub), data={"choice": "chosen", "topics": ["infections"]})
    assert store.get_row(db, sub.id).status == status


def test_no_subscribe_again_by_link_when_an_unsubscribe_followed_a_bounce(client, db):
    # Bounced, then SendGrid reports an unsubscribe (stronger): the bounce still holds.
    sub = store.insert(db, "bounced@example.com", topics={"genetics"})
    store.write_status(db, sub.id, "bounced", "sendgrid", "SendGrid bounce: 550 5.1.1")
    store.write_status(db, sub.id, "unsubscribed", "sendgrid", "SendGrid unsubscribe")
    before = store.history_rows(db, sub.id)

    html = client.get(url(sub)).get_data(as_text=True)
    assert "Subscribe again" not in html
    assert "Our emails to this address bounced" in html and "write to" in html
    response = client.post(url(sub).replace("/preferences/", "/resubscribe/"))
    assert response.status_code == 409
    assert "Our emails to this address bounced" in response.get_data(as_text=True)
    # Even a form that asks for it by name only saves the topics.
    client.post(
        url(sub), data={"choice": "chosen", "topics": ["infections"], "subscribe_again": "yes"}
    )
    assert store.get_row(db, sub.id).status == "unsubscribed"
    assert [h for h in store.history_rows(db, sub.id) if h["field"] == "status"] == [
        h for h in before if h["field"] == "status"
    ]


def test_after_an_admin_clears_a_bounce_a_later_unsubscribe_can_be_undone_by_link(client, db, run):
    sub = store.insert(db, "back@example.com", topics={"genetics"})
    store.write_status(db, sub.id, "bounced", "sendgrid", "SendGrid bounce: 550 5.1.1")
    cleared = run(
        "subscribers", "resubscribe", "back@example.com", "--force", "--reason", "new mailbox"
    )
    assert cleared.exit_code == 0
    client.post(url(sub, "unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    assert store.get_row(db, sub.id).status == "unsubscribed"

    # The bounce was cleared before this unsubscribe, so it is their own choice to undo.
    assert "Subscribe again" in client.get(url(sub)).get_data(as_text=True)
    response = client.post(url(sub).replace("/preferences/", "/resubscribe/"))
    assert response.status_code == 200
    assert store.get_row(db, sub.id).status == "subscribed"


def form_fields(html: str) -> tuple[str, dict]:
    """The topics form as a browser would submit it with its (only) submit button."""
    form = re.search(
        r'<form method="post" action="([^"]+)">\s*<input type="hidden"(.*?)</form>', html, re.S
    )
    assert form
    body = '<input type="hidden"' + form.group(2)
    data: dict = {"topics": []}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body):
        data[name] = value
    for name, value in re.findall(
        r'type="radio" id="[^"]+" name="([^"]+)" value="([^"]+)" checked', body
    ):
        data[name] = value
    data["topics"] = re.findall(
        r'type="checkbox" id="[^"]+" name="topics" value="([^"]+)" checked', body
    )
    button = re.search(
        r'<button class="button" type="submit"( name="([^"]+)" value="([^"]+)")?>', body
    )
    if button and button.group(1):
        data[button.group(2)] = button.group(3)
    return form.group(1), data


def test_a_preference_form_left_open_after_a_one_click_unsubscribe_does_not_resubscribe(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    action, data = form_fields(client.get(url(sub)).get_data(as_text=True))  # page left open
    # Meanwhile their mail app's one-click unsubscribe goes through.
    one_click = client.post(url(sub, "unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and store.get_row(db, sub.id).status == "unsubscribed"

    data["topics"] = ["genetics", "infections"]  # then they tick one more topic and save
    response = client.post(action, data=data)

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Welcome back" not in html
    assert "Saved." in html and "You are still unsubscribed" in html
    now = store.get_row(db, sub.id)
    assert now.status == "unsubscribed" and now.topics == {"genetics", "infections"}
    statuses = [h["new_value"] for h in store.history_rows(db, sub.id) if h["field"] == "status"]
    assert statuses == ["unsubscribed"]


def test_resubscribe_when_already_subscribed_changes_nothing(client, db):
    sub = store.insert(db, "here@example.com")
    before = store.history_rows(db, sub.id)
    response = client.post(url(sub).replace("/preferences/", "/resubscribe/"))
    assert response.status_code == 200
    assert "You are subscribed" in response.get_data(as_text=True)
    assert store.history_rows(db, sub.id) == before


def test_get_never_changes_anything(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"}, status="unsubscribed")
    before = store.history_rows(db, sub.id)
    for path in (url(sub), url(sub, "unsubscribe")):
        assert client.get(path).status_code == 200
        assert client.head(path).status_code == 200
    assert client.get(url(sub).replace("/preferences/", "/resubscribe/")).status_code == 405
    assert store.history_rows(db, sub.id) == before
