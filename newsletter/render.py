"""Render an issue for one selection of summaries: HTML (Jinja2 → MJML → HTML → premailer) and text.

A render serves every subscriber whose topics select the same summaries (a "segment"). What differs
per recipient (name, chosen topics, preference and unsubscribe links) is left as placeholders, which
`fill` replaces at delivery, or SendGrid replaces through `substitutions`.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .archive.urls import view_in_browser_url
from .config import Settings
from .content import Issue, Summary, journals_phrase
from .errors import NothingSelected, TemplateError
from .templating import add_utm, make_environment, render_template

# Per-recipient values. HTML and plain text get separate placeholders, because the HTML part needs
# the value HTML-escaped (a name like "Ana & Jo") and the text part needs it as it is.
RECIPIENT_FIELDS = ("name", "topics", "preferences_url", "unsubscribe_url")

# A placeholder carries a random nonce made for each render, so no text from a summary, an issue
# or a subscriber (all written before the render) can contain one: content that looks like a
# placeholder (`%%unsubscribe_url|html%%`) stays text, for `fill` and for SendGrid alike, which
# replaces its substitution keys wherever they occur in the body.
NONCE_BYTES = 8
MARKER_RE = re.compile(r"%%[a-z_]+(?:\|html)?\|[0-9a-f]{" + str(2 * NONCE_BYTES) + "}%%")


@dataclass(frozen=True)
class Placeholders:
    """One render's per-recipient markers: `%%name|NONCE%%` in text, `%%name|html|NONCE%%` in
    HTML; they survive MJML, premailer and hrefs unchanged."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(NONCE_BYTES))
    # (name, text marker, HTML marker), made once: `substitutions` runs once per recipient.
    _keys: tuple[tuple[str, str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        keys = tuple(
            (name, self.marker(name, False), self.marker(name, True)) for name in RECIPIENT_FIELDS
        )
        object.__setattr__(self, "_keys", keys)

    def marker(self, name: str, html_part: bool) -> str:
        return f"%%{name}|html|{self.nonce}%%" if html_part else f"%%{name}|{self.nonce}%%"

    @property
    def html(self) -> dict[str, str]:
        return {name: html_key for name, _, html_key in self._keys}

    @property
    def text(self) -> dict[str, str]:
        return {name: text_key for name, text_key, _ in self._keys}

    def substitutions(self, values: Mapping[str, str]) -> dict[str, str]:
        """Marker → value for both parts: HTML-escaped for the HTML part, plain for the text."""
        subs = {}
        for name, text_key, html_key in self._keys:
            value = values.get(name, "")
            subs[text_key] = value
            subs[html_key] = html.escape(value, quote=True)
        return subs


TEMPLATE_HTML = "email/issue.mjml.j2"
TEMPLATE_TEXT = "email/issue.txt.j2"
TEMPLATE_DISCLAIMER = "email/disclaimer.txt.j2"
TEXT_WIDTH = 78


@dataclass(frozen=True)
class RenderedEmail:
    """One segment's email, with per-recipient placeholders still in it."""

    subject: str
    preheader: str
    html: str
    text: str
    summary_ids: tuple[str, ...]
    journals: tuple[str, ...]
    disclaimer: str = field(repr=False, default="")
    placeholders: Placeholders = field(repr=False, default_factory=Placeholders)

    def substitutions(self, values: Mapping[str, str]) -> dict[str, str]:
        """This render's markers → one recipient's values (for `fill`, or SendGrid's own)."""
        return self.placeholders.substitutions(values)


def select_summaries(summaries: Iterable[Summary], topics: Iterable[str] | str) -> list[Summary]:
    """The summaries (in issue order) that share a topic with `topics`; "all" selects every one."""
    if topics == "all":
        return list(summaries)
    chosen = set(topics)
    return [s for s in summaries if chosen.intersection(s.topics)]


def summaries_for_topics(
    issue: Issue, summaries: Iterable[Summary], topics: Iterable[str] | str
) -> list[Summary]:
    """The issue's summaries a subscriber with `topics` gets, or NothingSelected when none
    matches (such a subscriber gets no email: there is nothing to render, preview or proof)."""
    selection = select_summaries(summaries, topics)
    if not selection:
        shown = topics if isinstance(topics, str) else ",".join(topics)
        raise NothingSelected(
            f"no summary in issue {issue.id} matches the topics {shown}: "
            "a subscriber with these topics gets no email"
        )
    return selection


def fill(template: str, subs: Mapping[str, str]) -> str:
    """Replace the render's placeholders with the recipient's values, in one pass: a value is
    never searched again, so a name that looks like a placeholder stays as it is."""
    return MARKER_RE.sub(lambda m: subs.get(m.group(0), m.group(0)), template)


class Renderer:
    """Renders issues with the workspace's templates; build one and reuse it for every segment."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.env = make_environment(settings.paths.templates)
        self.site_host = urlsplit(settings.site).hostname

    def _context(
        self,
        issue: Issue,
        summaries: list[Summary],
        html_part: bool,
        placeholders: Placeholders | None = None,
    ) -> dict:
        s = self.settings
        placeholders = placeholders or Placeholders()
        return {
            "settings": s,
            "issue": issue,
            "featured": summaries[0],
            "cards": summaries[1:],
            "summaries": summaries,
            "journals": journals_phrase(x.journal for x in summaries),
            "recipient": placeholders.html if html_part else placeholders.text,
            "link": lambda url: add_utm(str(url), issue.id, self.site_host),
            "site_link": add_utm(s.site, issue.id, self.site_host),
            # The issue's archive page (None: no link): the same URL for every reader.
            "view_in_browser": view_in_browser_url(s, issue),
            "width": TEXT_WIDTH,
        }

    def disclaimer(self, issue: Issue, summaries: list[Summary]) -> str:
        """The standard research disclaimer (plain text paragraphs) naming these journals."""
        context = self._context(issue, summaries, html_part=False)
        text = render_template(self.env, TEMPLATE_DISCLAIMER, **context)
        paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
        return "\n\n".join(p for p in paragraphs if p)

    def render(self, issue: Issue, summaries: list[Summary]) -> RenderedEmail:
        """Render the email for this selection of the issue's summaries (in issue order)."""
        if not summaries:
            raise ValueError("a rendered email needs at least one summary")
        disclaimer = self.disclaimer(issue, summaries)
        paragraphs = disclaimer.split("\n\n")
        placeholders = Placeholders()
        mjml_source = render_template(
            self.env,
            TEMPLATE_HTML,
            **self._context(issue, summaries, html_part=True, placeholders=placeholders),
            disclaimer_paragraphs=paragraphs,
        )
        text = render_template(
            self.env,
            TEMPLATE_TEXT,
            **self._context(issue, summaries, html_part=False, placeholders=placeholders),
            disclaimer_paragraphs=paragraphs,
        )
        return RenderedEmail(
            subject=issue.subject,
            preheader=issue.preheader,
            html=mjml_to_html(mjml_source, TEMPLATE_HTML),
            text=tidy_text(text),
            summary_ids=tuple(s.id for s in summaries),
            journals=tuple(dict.fromkeys(s.journal for s in summaries)),
            disclaimer=disclaimer,
            placeholders=placeholders,
        )


def mjml_to_html(source: str, template_name: str) -> str:
    """MJML → HTML → CSS inlined; nothing fetched from the network, responsive rules kept."""
    # Imported here, on the first render: premailer (with cssutils and lxml) takes longer to
    # import than most commands take to run, and only rendering needs it.
    import premailer
    from mjml import mjml2html

    try:
        # fonts={} stops mjml-python linking Google Fonts; we use a system font stack.
        raw = mjml2html(source, fonts={})
    except ValueError as exc:
        raise TemplateError(f"{template_name}: MJML error: {exc}") from None
    inliner = premailer.Premailer(
        raw,
        allow_network=False,  # never fetch <link> stylesheets
        strip_important=False,  # MJML's media queries need their !important to win on phones
        keep_style_tags=True,  # media queries cannot be inlined
        remove_classes=False,
        disable_validation=True,
        # premailer copies CSS into width/height/bgcolor/align/valign attributes, which are not
        # valid HTML on most elements (width="100%" on a <p>); MJML already writes the ones
        # Outlook needs, so add none.
        disable_basic_attributes=["width", "height", "bgcolor", "align", "valign"],
        cssutils_logging_level=logging.CRITICAL,
    )
    out = inliner.transform(pretty_print=False)
    # lxml adds a doctype of its own choosing; keep the one MJML gave (HTML5).
    if not out.lstrip().lower().startswith("<!doctype"):
        out = "<!doctype html>\n" + out
    return out


def tidy_text(text: str) -> str:
    """Collapse runs of blank lines the template's conditionals leave behind."""
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    return "\n".join(out).strip() + "\n"


def topics_phrase(settings: Settings, topics: Iterable[str] | str) -> str:
    """How the footer names a subscriber's chosen topics."""
    if topics == "all":
        return "all topics"
    labels = settings.topic_labels
    return ", ".join(labels.get(t, t) for t in topics)


def preview_values(settings: Settings, topics: Iterable[str] | str) -> dict[str, str]:
    """Stand-in per-recipient values for previews and `render`: links that cannot act on anyone."""
    base = settings.preferences_base
    return {
        "name": "reader",
        "topics": topics_phrase(settings, topics),
        "preferences_url": f"{base}/preferences/preview",
        "unsubscribe_url": f"{base}/unsubscribe/preview",
    }
