"""The sending commands: `send` (with --dry-run and --proof) and `report`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..content import load_issue
from ..delivery import (
    BACKENDS,
    LISTABLE,
    Observers,
    PlanPreview,
    SendObserver,
    SendReport,
    build_report,
    check_proof_address,
    list_entries,
    make_backend,
    parse_send_at,
    prepare_send,
    run_send,
    send_proof,
)
from ..delivery.workers import MAX_WORKERS
from ..errors import ContentError, DeliveryError, NewsletterError
from ..store import ledger as ledger_rows
from . import pass_app
from .editor import parse_topics

if TYPE_CHECKING:
    from rich.progress import Progress

# Observers a program embedding the CLI adds to `send` (click's `ctx.meta`, a list of
# SendObserver): a test uses one to stop the process at an exact point of the send.
SEND_OBSERVERS = "newsletter.send.observers"


def stdin_is_interactive() -> bool:
    """Whether someone can answer a question (a test may replace this)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _proof_addresses(ctx, param, values):
    try:
        return tuple(check_proof_address(v) for v in values)
    except DeliveryError as exc:
        raise click.BadParameter(str(exc)) from None


class LineObserver(SendObserver):
    """Warnings and retries as lines on stderr, no progress bar: a worker of `send --workers`,
    whose lines the command relays."""

    def __init__(self, console: Console):
        self.console = console

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, highlight=False)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def retrying(self, batch_no: int, attempt: int, delay: float, reason: str) -> None:
        self.console.print(
            f"batch {batch_no}: {reason}; retrying in {delay:.1f} s (attempt {attempt + 1})",
            markup=False,
            highlight=False,
        )


class ProgressObserver(LineObserver):
    """A Rich progress bar on stderr, and warnings and retries as lines above it."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def started(self, recipients: int, batches: int) -> None:
        # Only a send that sends shows a progress bar: Rich's takes a while to import.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        if not recipients:
            return
        self.progress = Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("send", total=recipients, detail="")
        self.sent = self.other = 0
        self.progress.start()

    def batch_done(self, sent: int, skipped: int, failed: int, unknown: int) -> None:
        if self.progress is None:
            return
        self.sent += sent
        self.other += skipped + failed + unknown
        detail = f"sent {self.sent}" + (f", not sent {self.other}" if self.other else "")
        self.progress.update(self.task, advance=sent + skipped + failed + unknown, detail=detail)

    def finished(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_plan(console: Console, plan: PlanPreview, summary_titles: dict[str, str]) -> None:
    table = Table(
        title=f"Plan for issue {plan.issue_id} ({plan.backend})",
        title_justify="left",
        show_lines=True,
    )
    table.add_column("segment")
    table.add_column("summaries")
    table.add_column("recipients", justify="right")
    table.add_column("batches", justify="right")
    for n, segment in enumerate(plan.segments, 1):
        titles = "\n".join(summary_titles.get(i, i) for i in segment.summary_ids)
        table.add_row(
            str(n), Text(titles), str(segment.recipients), str(segment.batches(plan.batch_size))
        )
    console.print(table)
    lines = [
        f"recipients: {plan.recipients} in {len(plan.segments)} segments",
        f"requests needed: {plan.requests} (up to {plan.batch_size} recipients each)",
        f"skipped (no matching topics): {plan.skipped}",
    ]
    if plan.not_subscribed:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(plan.not_subscribed.items()))
        lines.append(f"suppressed (not subscribed): {plan.suppressed} ({parts})")
    else:
        lines.append("suppressed (not subscribed): 0")
    if plan.existing:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(plan.existing.items()))
        lines.append(f"already in the ledger from earlier runs: {parts}")
    if plan.unknown_held:
        lines.append(
            f"unknown, held back: {plan.unknown_held} (submitted less than "
            "delivery.unknown_grace ago; --now resends them too)"
        )
    for line in lines:
        console.print(line, markup=False, highlight=False)


def print_report(console: Console, report: SendReport) -> None:
    if not report.total and report.state is None:
        console.print(f"issue {report.issue_id} has not been sent", markup=False)
        return
    head = f"issue {report.issue_id}: {report.state or 'not started'}"
    if report.backend:
        head += f" ({report.backend})"
    if report.finished_at and report.state == "sent":
        head += f", finished {report.finished_at}"
    if report.send_at:
        head += f", scheduled for {report.send_at}"
    console.print(head, markup=False, highlight=False)
    table = Table(show_header=True, title_justify="left")
    table.add_column("state")
    table.add_column("recipients", justify="right")
    table.add_column("why")
    for state in ("sent", "skipped", "failed", "unknown", "pending", "submitting"):
        count = report.count(state)
        if not count and state not in ("sent", "skipped", "failed", "unknown"):
            continue
        reasons = {r: n for r, n in report.reasons.get(state, {}).items() if r}
        why = "" if state == "pending" else "\n".join(f"{r}: {n}" for r, n in reasons.items())
        table.add_row(state, str(count), Text(why))
    console.print(table)
    if report.unknown_resolved:
        console.print(
            f"unknown, then reported by SendGrid's webhook (so sent, not resent): "
            f"{report.unknown_resolved}",
            markup=False,
            highlight=False,
        )
    if report.delivery:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(report.delivery.items()))
        console.print(f"after sending (webhooks): {parts}", markup=False, highlight=False)
    if report.not_planned:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(report.not_planned.items()))
        console.print(f"not on the list (no email planned): {parts}", markup=False)
    if report.last_error and report.state != "sent":
        console.print(f"stopped by: {report.last_error}", markup=False, highlight=False)
    if report.open and report.state != "sending":
        hints = []
        if report.count("pending") or report.count("failed") or report.count("submitting"):
            hints.append(f"`newsletter send {report.issue_id}` continues the send")
        if report.count("unknown"):
            hints.append(
                f"`newsletter send {report.issue_id} --retry-unknown` resends unknown ones "
                "submitted longer than delivery.unknown_grace ago (--now: all of them)"
            )
        if hints:
            console.print("; ".join(hints), markup=False, highlight=False)


@click.command()
@click.argument("issue")
@click.option("--backend", type=click.Choice(BACKENDS), help="Default: the settings' backend.")
@click.option("--dry-run", is_flag=True, help="Print the plan; send and write nothing.")
@click.option(
    "--proof",
    "proofs",
    multiple=True,
    metavar="ADDR",
    callback=_proof_addresses,
    help="Send a [PROOF] to this address only (repeatable); never recorded as a send.",
)
@click.option("--topics", help="With --proof: the topics of the proof (comma-separated or 'all').")
@click.option("--at", "at", metavar="WHEN", help="Schedule (SendGrid): e.g. 2026-12-01T09:00Z.")
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Resend recipients whose outcome is unknown (once delivery.unknown_grace has passed).",
)
@click.option(
    "--now", "retry_now", is_flag=True, help="With --retry-unknown: do not wait for the grace."
)
@click.option("--sandbox", is_flag=True, help="SendGrid sandbox: validated, not delivered.")
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=1,
    show_default=True,
    help="Sending processes sharing the issue (PostgreSQL; the same command on other hosts "
    "joins them).",
)
@click.option("--worker-run", hidden=True, help="Run as one worker of a `send --workers N`.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@pass_app
def send(
    app,
    ctx,
    issue,
    backend,
    dry_run,
    proofs,
    topics,
    at,
    retry_unknown,
    retry_now,
    sandbox,
    workers,
    worker_run,
    yes,
):
    """Send the issue (or a proof); resumable: run it again to continue."""
    settings = app.settings
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if workers > 1:
        for option, given in (("--proof", proofs), ("--sandbox", sandbox)):
            if given:
                raise click.UsageError(f"--workers cannot be used with {option}")
        # Before anything is checked, planned or written: SQLite takes one sender.
        ledger_rows.check_workers(app.db, workers)
    if topics is not None and not proofs:
        raise click.UsageError("--topics chooses a proof's topics: use it with --proof")
    if retry_now and not retry_unknown:
        raise click.UsageError(
            "--now resends unknown recipients at once: use it with --retry-unknown"
        )
    if proofs:
        for option, given in (("--at", at), ("--retry-unknown", retry_unknown)):
            if given:
                raise click.UsageError(f"{option} cannot be used with --proof")
        if dry_run:
            raise click.UsageError("--dry-run cannot be used with --proof")
        chosen = parse_topics(settings, topics or "all")
        result = send_proof(
            settings, issue, proofs, topics=chosen, backend=backend, sandbox=sandbox
        )
        out.print(
            f"Proof of issue {result.issue_id} ({len(result.summary_ids)} summaries) sent with "
            f"{result.backend} to {', '.join(result.addresses)}: {result.subject}",
            markup=False,
        )
        return

    when = parse_send_at(at) if at else None
    backend_name = backend or settings.delivery.backend
    if dry_run:
        prepared = prepare_send(
            settings,
            app.db,
            issue,
            backend=backend_name,
            retry_unknown=retry_unknown,
            retry_unknown_now=retry_now,
        )
        print_plan(out, prepared.plan, prepared.titles)
        if when:
            out.print(f"scheduled for: {when.isoformat()}", markup=False)
        out.print("dry run: nothing was sent or written", markup=False)
        return

    # Credentials are checked before anything is planned or claimed.
    backend_obj = make_backend(backend_name, settings, sandbox=sandbox)
    # Loaded and checked once: what is confirmed below is what `run_send` sends.
    prepared = prepare_send(
        settings,
        app.db,
        issue,
        backend=backend_obj,
        retry_unknown=retry_unknown,
        retry_unknown_now=retry_now,
        send_at=when,
        sandbox=sandbox,
    )
    if workers > 1 and ledger_rows.get_send(app.db, prepared.issue.id):
        sent = ledger_rows.get_send(app.db, prepared.issue.id)
        if sent["state"] == "sent":  # said once, not by each worker
            raise DeliveryError(
                f"issue {prepared.issue.id} was sent in full ({sent['finished_at']}); "
                f"`newsletter report {prepared.issue.id}` shows who got it"
            )
    if not yes:
        if not stdin_is_interactive():
            raise DeliveryError(
                "refusing to send without confirmation: there is no terminal to ask; "
                "pass --yes to send (see --dry-run for the plan)"
            )
        plan = prepared.plan
        question = (
            f"Send issue {plan.issue_id} to {plan.recipients} recipients "
            f"({len(plan.segments)} segments, {plan.requests} requests) with {backend_name}"
            + (" in SendGrid's sandbox (nothing delivered)" if sandbox else "")
            + (f", scheduled for {when.isoformat()}" if when else "")
            + (f", with {workers} workers" if workers > 1 else "")
            + "?"
        )
        if not click.confirm(question, default=False, err=True):
            raise DeliveryError("not confirmed: nothing was sent")
    if workers > 1:
        options = ["--backend", backend_name]
        options += ["--retry-unknown"] if retry_unknown else []
        options += ["--now"] if retry_now else []
        options += ["--at", at] if at else []
        send_with_workers(app, out, err, prepared.issue.id, issue, workers, options)
        return
    shown = LineObserver(err) if worker_run else ProgressObserver(err)
    observer = Observers(shown, *ctx.meta.get(SEND_OBSERVERS, ()))
    try:
        result = run_send(prepared, observer=observer, run_id=worker_run)
    except DeliveryError:
        issue_id = prepared.issue.id
        if worker_run is None and ledger_rows.get_send(app.db, issue_id):
            print_report(out, build_report(app.db, issue_id))
        raise
    run = result.run
    if result.sandbox:
        out.print(
            f"sandbox: SendGrid accepted {run.batches} requests for {run.sent} recipients; "
            "nothing was delivered or recorded",
            markup=False,
        )
        return
    summary = f"this run: sent {run.sent} in {run.batches} batches"
    for label, value in (
        ("skipped (unsubscribed meanwhile)", run.skipped),
        ("failed", run.failed),
        ("unknown", run.unknown),
        ("marked unknown after an interrupted send", run.recovered),
    ):
        if value:
            summary += f", {label} {value}"
    out.print(summary, markup=False)
    if worker_run is None:
        print_report(out, result.report)


def send_with_workers(app, out, err, issue_id, issue_ref, count, options) -> None:
    """`send --workers N`: N worker processes, their lines relayed as `worker K: ...`, then one
    report from the ledger; DeliveryError naming each worker that failed and why."""
    from ..delivery.send import new_run_id
    from ..delivery.workers import rows_by_worker, run_workers, worker_command

    command = worker_command(app.config_option, issue_ref, new_run_id(), options)

    def relay(number: int, line: str, is_error: bool) -> None:
        (err if is_error else out).print(f"worker {number}: {line}", markup=False)

    exits, interrupted = run_workers(command, count, relay)
    claimed = rows_by_worker(app.db, issue_id, exits)
    for done in exits:
        counts = claimed.get(done.number, {})
        parts = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "nothing"
        status = f"failed ({done.why})" if done.failed else "finished"
        out.print(f"worker {done.number} (pid {done.pid}): {status}; its rows: {parts}")
    print_report(out, build_report(app.db, issue_id))
    if interrupted:
        raise KeyboardInterrupt
    failed = [e for e in exits if e.failed]
    if failed:
        raise DeliveryError(
            "\n".join(f"worker {e.number} (pid {e.pid}) failed: {e.why}" for e in failed)
        )


def _titles(settings) -> dict[str, str]:
    from ..content import load_summaries

    try:
        return {sid: s.title for sid, s in load_summaries(settings).items()}
    except NewsletterError:
        return {}


def _issue_id(settings, db, ref: str) -> str:
    """ISSUE as an id: from its file, or as given when the file is gone but the send is known."""
    try:
        return load_issue(settings, ref).id
    except ContentError:
        if ledger_rows.get_send(db, ref) or ledger_rows.has_rows(db, ref):
            return ref
        raise


@click.command()
@click.argument("issue", required=False)
@click.option(
    "--list",
    "list_state",
    type=click.Choice(LISTABLE),
    help="Print the addresses in this state (ledger state or webhook outcome).",
)
@click.option("--clicks", is_flag=True, help="Per summary: readers who clicked, clicks, share.")
@click.option("--topics", is_flag=True, help="Per topic over issues: which summaries drew readers.")
@click.option("--since", metavar="DATE", help="With --topics: issues sent on or after DATE.")
@click.option("--html", type=click.Path(dir_okay=False), help="Also write the chart page here.")
@pass_app
def report(app, issue, list_state, clicks, topics, since, html):
    """Who got the issue, who did not and why, what failed or is unknown.

    With --clicks (one issue) or --topics (every issue): which summaries readers followed.
    """
    from . import clicks as click_report

    click_report.check_options(issue, clicks, topics, since, html)
    if clicks or topics:
        issue_id = _issue_id(app.settings, app.db, issue) if issue else None
        click_report.run_report(app, Console(highlight=False), issue_id, since, html)
        return
    issue_id = _issue_id(app.settings, app.db, issue)
    if list_state:
        for entry in list_entries(app.db, issue_id, list_state):
            line = entry.email
            if entry.reason and list_state in ("skipped", "failed", "unknown", "pending"):
                line += f"\t{entry.reason}"
            click.echo(line)
        return
    out = Console(highlight=False)
    report_data = build_report(app.db, issue_id)
    print_report(out, report_data)
    if report_data.segments:
        titles = _titles(app.settings)
        table = Table(title="segments", title_justify="left", show_lines=True)
        table.add_column("summaries")
        table.add_column("sent", justify="right")
        table.add_column("other", justify="right")
        for segment in report_data.segments:
            sent = segment.counts.get("sent", 0)
            other = sum(segment.counts.values()) - sent
            names = "\n".join(titles.get(i, i) for i in segment.summary_ids)
            table.add_row(Text(names), str(sent), str(other))
        out.print(table)


COMMANDS = [send, report]
