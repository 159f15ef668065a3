"""`newsletter preview`: a local page to look at an issue per topic choice, at desktop and phone width.

Renders on request, so an editor can edit a summary or template and reload. Local use only: the
per-recipient values are stand-ins (see `render.preview_values`).
"""

from __future__ import annotations

from flask import Flask, Response, request

from ..config import Settings
from ..content import load_issue, load_summaries, resolve_summaries
from ..errors import NewsletterError, NothingSelected
from ..render import Renderer, fill, preview_values, summaries_for_topics
from ..templating import make_environment, render_template


def _chosen_topics(settings: Settings, raw: list[str]) -> list[str] | str:
    topics = [t for t in raw if t in settings.topic_slugs]
    return topics if topics and "all" not in raw else "all"


def create_preview_app(settings: Settings, issue_ref: str) -> Flask:
    """The preview web app; validates the issue and its summaries once up front."""
    issue = load_issue(settings, issue_ref)
    resolve_summaries(issue, load_summaries(settings))  # fail now, not on the first request
    app = Flask(__name__, static_folder=None)  # web/static is the preference centre's
    env = make_environment(settings.paths.templates)

    def render_for(topics):
        # Re-read on every request so that edits show on reload.
        current = load_issue(settings, issue_ref)
        summaries = resolve_summaries(current, load_summaries(settings))
        try:
            selection = summaries_for_topics(current, summaries, topics)
        except NothingSelected:
            return current, None
        email = Renderer(settings).render(current, selection)
        return current, (email, email.substitutions(preview_values(settings, topics)))

    def topics_from_request():
        return _chosen_topics(settings, request.args.getlist("topics"))

    @app.errorhandler(NewsletterError)
    def content_problem(exc):
        body = "The issue cannot be rendered:\n\n" + str(exc)
        return Response(body, status=500, mimetype="text/plain")

    @app.get("/")
    def index():
        topics = topics_from_request()
        current, rendered = render_for(topics)
        query = "&".join(f"topics={t}" for t in (topics if topics != "all" else ["all"]))
        page = render_template(
            env,
            "preview/index.html.j2",
            settings=settings,
            issue=current,
            topics=topics,
            query=query,
            text=fill(rendered[0].text, rendered[1]) if rendered else None,
            summary_ids=rendered[0].summary_ids if rendered else (),
            html_kb=len(rendered[0].html.encode()) / 1024 if rendered else 0,
        )
        return Response(page, mimetype="text/html")

    def email_part(part: str, mimetype: str) -> Response:
        _, rendered = render_for(topics_from_request())
        if rendered is None:
            return Response("No summary matches these topics.", status=404, mimetype="text/plain")
        email, subs = rendered
        return Response(fill(getattr(email, part), subs), mimetype=mimetype)

    app.add_url_rule("/email.html", "email_html", lambda: email_part("html", "text/html"))
    app.add_url_rule("/email.txt", "email_text", lambda: email_part("text", "text/plain"))

    return app
