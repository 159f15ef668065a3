"""The `newsletter` command: a thin layer over the library.

Each command parses its options, calls one library function and prints the result. Library errors
(`NewsletterError`), database errors and file-system errors become one line per problem on stderr
and exit status 1 (one mapping for every command: `errors.user_message`); usage errors exit 2.

Start-up: a command's module is imported only when that command runs (`COMMANDS` says where
each one is), and `newsletter --help` lists them without importing any; the command modules import
heavy libraries (pydantic, Jinja2, MJML, premailer, Flask, the SendGrid client, Rich) inside the
commands that use them. tests/test_cli_startup.py keeps it so.
"""

from __future__ import annotations

import importlib
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import NewsletterError

if TYPE_CHECKING:
    from ..config import Environment, Settings


class App:
    """What every command shares, each made on first use: the environment (read once), the
    settings (loaded once) and the database."""

    def __init__(self, config: str | None):
        self.config_option = config
        self._db = None

    @cached_property
    def environment(self) -> Environment:
        from ..config import Environment

        return Environment.read()

    @cached_property
    def config(self):
        """The settings file: --config, else NEWSLETTER_CONFIG, else ./newsletter.yaml."""
        from ..config import config_path

        return config_path(self.config_option, self.environment)

    @cached_property
    def settings(self) -> Settings:
        from ..config import load_settings

        return load_settings(self.config)

    @property
    def db(self):
        if self._db is None:
            from ..store import open_database

            self._db = open_database(self.settings, self.environment)
        return self._db

    def database_in_use(self) -> tuple[str | Path | None, float]:
        """The database (file or URL) this command opened (or would open) and its busy timeout."""
        from ..store import BUSY_TIMEOUT, location

        if self._db is not None:
            return self._db.location, self._db.timeout
        try:
            return location(self.settings, self.environment), BUSY_TIMEOUT
        except (NewsletterError, OSError):
            return None, BUSY_TIMEOUT

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def fail(message: str) -> None:
    """Print every line of a user-facing error to stderr."""
    for line in str(message).splitlines() or ["failed"]:
        click.echo(f"error: {line}", err=True)


# Every command: the module of this package that defines it, and the first paragraph of its help,
# which `newsletter --help` shows without importing the module (a test checks each against the
# command's own help).
COMMANDS: dict[str, tuple[str, str]] = {
    "archive": (
        "archive",
        "The public archive of sent issues: pages, topic pages, feed, sitemap, search.",
    ),
    "check": ("editor", "Pre-send checks: content, size, disclaimer, links, placeholders."),
    "db": (
        "db",
        "The database: where its schema stands, upgrading it, copying it to another engine.",
    ),
    "compose": ("editor", "Pick the latest summaries and write issues/<id>.yaml."),
    "preview": (
        "editor",
        "Serve a local page to look at the issue per topic choice (desktop and phone).",
    ),
    "render": ("editor", "Render the email one subscriber with these topics would get."),
    "report": ("sending", "Who got the issue, who did not and why, what failed or is unknown."),
    "send": ("sending", "Send the issue (or a proof); resumable: run it again to continue."),
    "serve": (
        "web",
        "Serve the preference centre, one-click unsubscribe, the SendGrid webhook and (when "
        "signup.enabled) the signup form.",
    ),
    "subscribers": (
        "subscribers",
        "Manage subscribers: import, export, add, change, list, stats, history.",
    ),
    "signup-form": ("signup", "Print the signup form as HTML to paste into another site's page."),
    "summaries": ("summaries", "Summaries: pull the newly published ones from the site."),
    "suppressions": (
        "web",
        "SendGrid's suppression lists: unsubscribes, bounces, spam reports, invalid addresses.",
    ),
}


class NewsletterGroup(click.Group):
    """Loads each command's module when the command is used, and maps every error the user can
    act on to a message and exit status 1, never a traceback.

    The mapping (`errors.user_message`) covers the library's errors, the database's and the
    file system's, for every command of the group and of its subgroups.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.list_commands(ctx):
            # A mistyped command: load them all, so that click can say "Did you mean ...?".
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands, laid out by click as always, from `COMMANDS`' help texts for
        the commands not loaded: `--help` imports no command module."""
        listing = click.Group(
            commands=[
                self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
                for name in self.list_commands(ctx)
            ]
        )
        click.Group.format_commands(listing, ctx, formatter)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # Imported here: the mapping needs the store and the settings, which `--help` does not.
            from ..store import BUSY_TIMEOUT
            from .errors import user_message

            where = ctx.obj.database_in_use() if isinstance(ctx.obj, App) else (None, BUSY_TIMEOUT)
            message = user_message(exc, *where)
            if message is None:
                raise
            fail(message)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        finally:
            if isinstance(ctx.obj, App) and ctx.parent is None:
                ctx.obj.close()


pass_app = click.make_pass_decorator(App)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    metavar="PATH",
    help="Settings file (default: ./newsletter.yaml, or $NEWSLETTER_CONFIG).",
)
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Compose, check, preview and send the MS research newsletter."""
    ctx.obj = App(config)


def main() -> None:
    cli.main(prog_name="newsletter", windows_expand_args=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
