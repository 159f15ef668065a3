"""The `newsletter` command: a thin layer over the library.

Each command parses its options, calls one library function and prints the result. Library errors
(`NewsletterError`) become one line per problem on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import sys
from functools import cached_property

import click

from ..config import Settings, config_path, load_settings
from ..errors import NewsletterError


class App:
    """What every command shares: the settings (loaded once, on first use) and the database."""

    def __init__(self, config: str | None):
        self.config = config_path(config)
        self._db = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config)

    @property
    def db(self):
        if self._db is None:
            from ..store import open_database

            self._db = open_database(self.settings)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def fail(message: str) -> None:
    """Print every line of a user-facing error to stderr."""
    for line in str(message).splitlines() or ["failed"]:
        click.echo(f"error: {line}", err=True)


class NewsletterGroup(click.Group):
    """Maps the library's exceptions to a message and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            fail(str(exc))
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


def _register() -> None:
    from . import archive, editor, sending, signup, subscribers, summaries, web

    for module in (editor, sending, subscribers, summaries, web, archive, signup):
        for command in module.COMMANDS:
            cli.add_command(command)
    for command in signup.SUBSCRIBERS_COMMANDS:
        subscribers.subscribers.add_command(command)


_register()


def main() -> None:
    cli.main(prog_name="newsletter", windows_expand_args=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
