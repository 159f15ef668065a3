"""What the user reads when a command fails: the one mapping from exceptions to messages.

`NewsletterGroup` applies it to every command, so a new command cannot forget it. The library's
own errors, database errors (naming the database file) and the environment's (a folder where a
file should be, a full disk, a refused permission) become one line each on stderr and exit
status 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import display_path
from ..errors import NewsletterError
from ..store import BUSY_TIMEOUT, DatabaseError, explain


def user_message(exc: BaseException, database: str | Path | None, timeout: float = BUSY_TIMEOUT):
    """The message for an error the user can fix or must know about; None for a bug.

    `database` is the database (file or URL) the command was using (named in database errors).
    """
    if isinstance(exc, NewsletterError):
        return str(exc)
    if isinstance(exc, DatabaseError):
        return explain(database or Path("the database"), exc, timeout)
    if isinstance(exc, OSError):
        return os_message(exc)
    return None


def os_message(exc: OSError) -> str:
    """`path: is a directory`: the file named by the error and what the system said about it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    reason = reason[:1].lower() + reason[1:]
    if exc.filename is None:
        return reason
    where = display_path(Path(os.fsdecode(exc.filename)))
    if exc.filename2 is not None:
        where += f" → {display_path(Path(os.fsdecode(exc.filename2)))}"
    return f"{where}: {reason}"
