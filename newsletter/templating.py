"""The one Jinja2 environment: strict about undefined names, autoescaping HTML and MJML.

Template errors are turned into TemplateError naming the template and line, never a traceback.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jinja2

from .errors import TemplateError


def add_utm(url: str, campaign: str, site_host: str | None) -> str:
    """Add UTM parameters to links that point at our own site (never to third-party links)."""
    parts = urlsplit(url)
    if site_host is not None and parts.hostname != site_host:
        return url
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.startswith("utm_")
    ]
    query += [("utm_source", "newsletter"), ("utm_medium", "email"), ("utm_campaign", campaign)]
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def long_date(value) -> str:
    """'12 November 2026': unambiguous for readers on both sides of the Atlantic."""
    return f"{value.day} {value:%B %Y}"


def make_environment(template_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "mjml", "html.j2", "mjml.j2"),
            default_for_string=False,
            default=False,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["long_date"] = long_date
    return env


def _template_location(exc: BaseException) -> tuple[str | None, int | None]:
    """Find the innermost template frame in a traceback (Jinja rewrites frames to template lines)."""
    name, line = None, None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and frame.filename.endswith(".j2"):
            name, line = frame.filename, frame.lineno
    return name, line


def render_template(env: jinja2.Environment, name: str, **context: Any) -> str:
    """Render `name`; any failure becomes a TemplateError naming template and line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or exc.name or name
        raise TemplateError(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template not found: {exc.name}") from None
    except jinja2.UndefinedError as exc:
        where, line = _template_location(exc)
        place = f"{where}:{line}" if where else name
        raise TemplateError(f"{place}: template error: {exc.message}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        where, line = _template_location(exc)
        if where is None:
            raise
        raise TemplateError(f"{where}:{line}: template error: {exc}") from None
