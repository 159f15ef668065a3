"""The `tracking_settings` of every SendGrid mail-send request, said explicitly.

SendGrid applies the account's own defaults to whatever a request leaves out: an account with
click or open tracking on would silently rewrite every link through its tracking domain and add
an open pixel. So every request says what it wants, from `delivery.sendgrid.click_tracking` and
`open_tracking` (both off by default); SendGrid's subscription footer is always off (our own
List-Unsubscribe headers and footer links stand).
"""

from __future__ import annotations

from ..config import SendGridSettings


def tracking_settings(sendgrid: SendGridSettings) -> dict:
    """The request's `tracking_settings` object (SendGrid's mail-send schema)."""
    return {
        # Only the HTML part's links are rewritten: the text part keeps the links as written,
        # readable and the same as the archive's (`enable_text` off).
        "click_tracking": {"enable": sendgrid.click_tracking, "enable_text": False},
        "open_tracking": {"enable": sendgrid.open_tracking},
        "subscription_tracking": {"enable": False},
    }
