"""Writing the file a user names with `-o`: never half a file, never a replaced device or link."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from .config import display_path
from .errors import NewsletterError


@contextmanager
def open_output(
    path: str | os.PathLike, newline: str | None = None, make_folders: bool = False
) -> Iterator[TextIO]:
    """A UTF-8 text stream whose content ends up at `path`.

    A regular file, or a path where nothing is yet, is written atomically: into a temporary file
    beside it, renamed over it once everything is written, so a failure leaves the old file as it
    was and no temporary file behind. Anything else (a device such as /dev/null, a FIFO, a
    symlink) is opened and written in place: renaming over it would replace the device, the pipe
    or the link itself, and a FIFO's reader would get nothing. A symlink's target gets the
    content; the link stays a link.

    `make_folders` creates missing parent folders. An OSError becomes a NewsletterError that
    names the path.
    """
    path = Path(path)
    try:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            with open(path, "w", encoding="utf-8", newline=newline) as out:
                yield out
            return
        if make_folders:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        # A new file gets the usual permissions (0666 less the umask); a replaced one keeps its own.
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "w", encoding="utf-8", newline=newline) as out:
                if mode is not None:
                    os.fchmod(out.fileno(), stat.S_IMODE(mode))
                yield out
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise NewsletterError(
            f"{display_path(path)}: cannot write: {exc.strerror or exc}"
        ) from None


def write_output(path: str | os.PathLike, text: str, make_folders: bool = False) -> None:
    """Write `text` to `path` the way `open_output` does."""
    with open_output(path, make_folders=make_folders) as out:
        out.write(text)
