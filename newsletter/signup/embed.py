"""`newsletter signup-form`: the signup form as an HTML snippet for another site's pages.

It posts to `<preferences_url>/subscribe` with a signed stamp naming the form (for the consent
record). Being printed once, it cannot say when it was shown, so the first POST from it is
answered with our own form, filled in, to be sent from there: the minimum fill time and every
other check apply to each signup, wherever the form was.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Environment, Settings
from ..errors import ConfigError
from ..templating import make_environment, render_template
from .forms import ALL_TOPICS_LABEL, HONEYPOT, FormStamps

TEMPLATE = "web/signup-form.html.j2"


@dataclass(frozen=True)
class Snippet:
    html: str
    warnings: list[str]


def form_snippet(settings: Settings, form_id: str = "embed") -> Snippet:
    """The snippet; ConfigError when signup is off (the form would lead nowhere) or the secret
    key is not the one `serve` needs (the stamp is signed with it)."""
    if not settings.signup.enabled:
        raise ConfigError(
            "signup.enabled is false: `newsletter serve` offers no /subscribe for the form to "
            "post to (set signup: {enabled: true} in the settings)"
        )
    stamp = FormStamps(Environment.read().signing_key(required=True)).embedded(form_id)
    html = render_template(
        make_environment(settings.paths.templates),
        TEMPLATE,
        action=f"{settings.preferences_base}/subscribe",
        stamp=stamp,
        form_id=form_id,
        newsletter=settings.name,
        topics=settings.topics,
        all_label=ALL_TOPICS_LABEL,
        consent_text=settings.signup.consent_text,
        privacy_url=str(settings.privacy_url),
        honeypot=HONEYPOT,
    )
    warnings = []
    if not settings.signup.allowed_origins:
        warnings.append(
            "signup.allowed_origins is empty: `serve` refuses this form on any other site until "
            "the site's origin (such as https://www.example.org) is listed there"
        )
    return Snippet(html, warnings)
