"""The environment of a child process a test starts (a `newsletter` command, gunicorn).

Nothing of the developer's own NEWSLETTER_*/SENDGRID_* settings leaks in, except the test's own
database (NEWSLETTER_DATABASE_URL, set by the `database_url` fixture for PostgreSQL): a child
that lost it would quietly run against SQLite instead.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def child_env(**values: str) -> dict[str, str]:
    """os.environ without NEWSLETTER_*/SENDGRID_* (but with the test's database), this checkout
    first on PYTHONPATH, no proxy for 127.0.0.1, then `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    if os.environ.get("NEWSLETTER_DATABASE_URL"):
        env["NEWSLETTER_DATABASE_URL"] = os.environ["NEWSLETTER_DATABASE_URL"]
    env.update(PYTHONPATH=str(REPO), no_proxy="127.0.0.1,localhost")
    env.update(values)
    return env
