"""The built archive (`newsletter archive build`) served at `/archive/` by `newsletter serve`, for
small setups without a static host. Files only, read-only: a folder's address serves its
`index.html`, exactly as a static host would, so the same relative links work in both places."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, redirect, request, send_from_directory
from werkzeug.security import safe_join

# Unlike the preference centre, the archive's search page runs its own script and fetches its
# own index (search.json); nothing from anywhere else.
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_AGE = 300  # public pages that change once a month: caches may keep them a few minutes


def archive_blueprint(folder: Path) -> Blueprint:
    blueprint = Blueprint("archive", __name__)

    @blueprint.get("/archive/", defaults={"path": ""})
    @blueprint.get("/archive/<path:path>")
    def page(path: str) -> Response:
        if any(part.startswith(".") for part in path.split("/")):
            abort(404)  # the build's own files (its list of files, temporary files)
        if path and not path.endswith("/"):
            full = safe_join(str(folder), path)
            if full is not None and Path(full).is_dir():
                return redirect(request.path + "/", 308)
        name = path + "index.html" if path == "" or path.endswith("/") else path
        response = send_from_directory(folder, name, max_age=MAX_AGE)
        response.headers["Content-Security-Policy"] = ARCHIVE_CSP
        response.headers["X-Robots-Tag"] = "all"  # public pages, unlike the token pages
        return response

    return blueprint
