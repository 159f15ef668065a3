"""The preference centre as a WSGI `app` for production servers (waitress, gunicorn).

Settings come from NEWSLETTER_CONFIG (default ./newsletter.yaml); NEWSLETTER_SECRET_KEY must be
set, or importing this module fails with the reason.

    waitress-serve --listen=127.0.0.1:8080 newsletter.web.wsgi:app
    gunicorn --workers 4 --bind 127.0.0.1:8080 newsletter.web.wsgi:app
"""

from __future__ import annotations

from ..config import load_settings
from . import create_app

app = create_app(load_settings())
