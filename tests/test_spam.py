"""SpamAssassin (Debian's `spamassassin`, local rules only) on every message of the example send
and on proofs of the example issue: no content rule may add to the spam score.

SpamAssassin takes seconds to start, so it runs once, over every message, from one fixture.
"""
# Not both_engines: SpamAssassin's verdict on the messages, no database.

from __future__ import annotations

import email
import shutil
import subprocess
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from tests.conftest import EXAMPLE_ISSUE, REPO, TEST_SECRET

SPAMASSASSIN = "spamassassin"

# Rules left out of "no positive score", each for a reason that no content change can meet:
EXCLUDED = {
    # Scored 0.001: "informational", it fires on every message that has an HTML part at all. A
    # newsletter with a designed HTML part (and a text part) cannot avoid it, and its score is
    # too small ever to matter; it is shown as 0.0 in the report.
    "HTML_MESSAGE",
    # About transport, not content: a message read from the outbox never passed through an MTA,
    # so it has no Received headers and no relays. (Both score -0.001 in SpamAssassin 4.0.1;
    # listed so that a rule set that scores them otherwise still tests content only.)
    "NO_RECEIVED",
    "NO_RELAYS",
}
# Network rules (DNS blocklists, URIBL, Razor, Pyzor, DKIM/SPF lookups) are not run at all: `-L`.

# SpamAssassin adds this header to each message: every rule that fired, with its score.
TESTS_HEADER = "X-Spam-Tests"
SA_ARGS = [
    "-L",  # local tests only: this machine reaches no network
    "-t",  # test mode: the report is added to each message, as `spamassassin -L -t` shows it
    "-x",  # create no user preferences file
    "--cf",
    "use_bayes 0",  # untrained Bayes scores nothing; skipping it makes each message faster
    "--cf",
    f"add_header all {TESTS_HEADER.removeprefix('X-Spam-')} _TESTSSCORES(,)_",
]

# A copy of the hidden text the email used to carry, to show that the check can fail.
HIDDEN_TEXT = (
    '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
    'max-width:0px;opacity:0;overflow:hidden;">A preheader hidden in white</div>'
    '<p><a href="https://ms-research.example.org/">Read more<span style="position:absolute;'
    'left:-9999px;"> about something</span></a></p>'
)
CONTROL_ID = "<control.hidden-text@ms-research.example.org>"


def newsletter(config: Path, *args: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), *args],
        env={"NEWSLETTER_SECRET_KEY": TEST_SECRET},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output


def control_message(proof: Path, folder: Path) -> Path:
    """The proof with the old hidden preheader and off-page link text put back."""
    msg = email.message_from_bytes(proof.read_bytes(), policy=policy.SMTP)
    html = msg.get_body(("html",))
    html.set_content(html.get_content().replace("</body>", HIDDEN_TEXT + "</body>"), subtype="html")
    del msg["Message-ID"]
    msg["Message-ID"] = CONTROL_ID
    path = folder / "control.eml"
    path.write_bytes(msg.as_bytes())
    return path


def scores(output: bytes) -> dict[str, dict[str, float]]:
    """Message-ID → {rule: score} from SpamAssassin's output of many messages."""
    marker = b"X-Spam-Checker-Version:"
    chunks = [marker + c for c in output.split(b"\n" + marker)]
    chunks[0] = chunks[0].removeprefix(marker)  # the first message starts with the marker
    out = {}
    for chunk in chunks:
        msg = email.message_from_bytes(chunk, policy=policy.default)
        fired = "".join(str(msg[TESTS_HEADER] or "").split())
        rules = {}
        for item in filter(None, fired.split(",")):
            name, _, score = item.partition("=")
            rules[name] = float(score)
        out[str(msg["Message-ID"])] = rules
    return out


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Send the example issue to the example subscribers (outbox), send proofs (all topics, one
    topic), then run SpamAssassin once over every message and a control message."""
    if shutil.which(SPAMASSASSIN) is None:
        pytest.fail("spamassassin is missing: install Debian's spamassassin package (see .ci/run)")
    root = tmp_path_factory.mktemp("spam") / "ws"
    root.mkdir()
    for name in ("summaries", "issues", "templates"):
        shutil.copytree(REPO / name, root / name)
    for name in ("newsletter.yaml", "subscribers.example.csv"):
        shutil.copy(REPO / name, root / name)
    config = root / "newsletter.yaml"
    newsletter(config, "subscribers", "import", str(root / "subscribers.example.csv"))
    newsletter(config, "send", EXAMPLE_ISSUE, "--backend", "outbox", "--yes")
    newsletter(config, "send", EXAMPLE_ISSUE, "--proof", "all@example.org", "--yes")
    newsletter(
        config, "send", EXAMPLE_ISSUE, "--proof", "one@example.org", "--topics", "genetics",
        "--yes",
    )  # fmt: skip
    outbox = root / "outbox" / EXAMPLE_ISSUE
    messages = sorted(outbox.rglob("*.eml"))
    control = control_message(outbox / "proofs" / "all@example.org.eml", root)
    # HOME: SpamAssassin keeps per-user state there; a throw-away one keeps runs independent.
    done = subprocess.run(
        [SPAMASSASSIN, *SA_ARGS, *map(str, messages), str(control)],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(root), "LANG": "C.UTF-8"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    by_id = scores(done.stdout)
    ids = {
        path: str(email.message_from_bytes(path.read_bytes(), policy=policy.default)["Message-ID"])
        for path in messages
    }
    return {path.relative_to(outbox): by_id[ids[path]] for path in messages}, by_id[CONTROL_ID]


def test_every_example_message_fires_no_positive_content_rule(checked):
    results, _ = checked
    # 20 subscribers on the list get the example issue, plus the two proofs.
    assert len(results) == 22
    assert len([p for p in results if p.parts[0] == "proofs"]) == 2
    flagged = {
        str(path): {rule: score for rule, score in rules.items() if score > 0}
        for path, rules in results.items()
    }
    flagged = {path: rules for path, rules in flagged.items() if set(rules) - EXCLUDED}
    assert flagged == {}
    # The rules did run (an empty rules folder, as a failed sa-update leaves, fires nothing).
    assert all("HTML_MESSAGE" in rules for rules in results.values()), "no rule fired at all"


def test_the_check_sees_hidden_text(checked):
    """The control message (a proof with the old white preheader and off-page link text) is
    flagged: the check above is not blind."""
    _, control = checked
    assert control.get("HTML_FONT_LOW_CONTRAST", 0) > 0
    assert control.get("HTML_OFF_PAGE", 0) > 0
