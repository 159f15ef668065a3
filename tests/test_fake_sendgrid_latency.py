"""The SendGrid stand-in at a real provider's pace: `--latency MS` holds each mail send before
its answer, concurrent requests are held together (so a sender with several requests in flight
can be measured), and `--bandwidth` adds each request's upload time."""
# Not both_engines: the SendGrid stand-in itself, no database.

from __future__ import annotations

import json
import threading

import pytest
import sendgrid

from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid, start_fake_sendgrid_process


def payload(address: str) -> dict:
    return {
        "personalizations": [{"to": [{"email": address}]}],
        "from": {"email": "news@example.org"},
        "subject": "Pace",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def post_in_threads(url: str, addresses: list[str]) -> tuple[list[threading.Thread], dict]:
    """Each address's mail send posted from its own thread with the official client."""
    statuses: dict[str, int] = {}

    def post(address: str) -> None:
        client = sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=url)
        client.client.timeout = 60
        statuses[address] = client.client.mail.send.post(request_body=payload(address)).status_code

    threads = [threading.Thread(target=post, args=(a,)) for a in addresses]
    for thread in threads:
        thread.start()
    return threads, statuses


def test_latency_holds_concurrent_requests_together():
    """`python -m tests.fake_sendgrid --latency MS`: two requests are held at the same time."""
    with start_fake_sendgrid_process(latency_ms=60_000) as fake:
        threads, statuses = post_in_threads(fake.url, ["a@example.com", "b@example.com"])
        try:
            # A server answering one request at a time would hold the second back for a minute.
            both_held = fake.wait_for("in_flight", n=2, timeout=20)
            assert fake.stats()["accepted_requests"] == 0  # nobody answered yet
        finally:
            fake.release()
            for thread in threads:
                thread.join(30)
        assert both_held
        assert statuses == {"a@example.com": 202, "b@example.com": 202}
        times = fake.send_times()
        assert len(times) == 2
        assert max(t["started"] for t in times) < min(t["answered"] for t in times)
        assert sorted(fake.recipients()) == ["a@example.com", "b@example.com"]


def test_each_answer_comes_after_the_latency():
    with FakeSendGrid(latency_ms=200) as fake:
        threads, statuses = post_in_threads(fake.url, ["a@example.com"])
        threads[0].join(30)
        assert statuses == {"a@example.com": 202}
        (entry,) = fake.send_times()
        assert entry["status"] == 202
        assert entry["answered"] - entry["started"] >= 0.2


def test_bandwidth_adds_the_upload_time():
    body = payload("a@example.com")
    size = len(json.dumps(body).encode())  # what the official client sends
    with FakeSendGrid(bandwidth=size * 4) as fake:  # a quarter of a second for this body
        threads, statuses = post_in_threads(fake.url, ["a@example.com"])
        threads[0].join(30)
        assert statuses == {"a@example.com": 202}
        (entry,) = fake.send_times()
        assert entry["answered"] - entry["started"] >= 0.25


def test_without_latency_nothing_is_held():
    with FakeSendGrid() as fake:
        threads, statuses = post_in_threads(fake.url, ["a@example.com", "b@example.com"])
        for thread in threads:
            thread.join(30)
        assert statuses == {"a@example.com": 202, "b@example.com": 202}
        assert fake.stats()["in_flight"] == 0
        assert [t["status"] for t in fake.send_times()] == [202, 202]


def test_latency_can_be_set_at_run_time_and_is_checked():
    with FakeSendGrid() as fake:
        control = fake.control  # over HTTP, like a separate process
        control.set_mode(latency_ms=60_000)
        threads, statuses = post_in_threads(fake.url, ["a@example.com"])
        try:
            assert control.wait_for("in_flight", n=1, timeout=20)
        finally:
            control.release()
            threads[0].join(30)
        assert statuses == {"a@example.com": 202}
        with pytest.raises(Exception, match="latency_ms must be a non-negative number"):
            control.set_mode(latency_ms=-1)
