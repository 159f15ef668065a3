"""The database schema as an ordered list of migrations. Append; never edit one that has shipped.

Each migration runs once, inside a transaction, and bumps `schema_version`.
"""

from __future__ import annotations

import re

SUBSCRIBER_STATUSES = ("subscribed", "unsubscribed", "bounced", "complained", "invalid")
LEDGER_STATES = ("pending", "submitting", "sent", "failed", "unknown", "skipped")
STATUS_SOURCES = ("import", "cli", "web", "sendgrid", "signup")

MIGRATIONS: list[str] = [
    # 1: subscribers, their history, the send ledger.
    f"""
    CREATE TABLE subscribers (
        id                INTEGER PRIMARY KEY,
        email             TEXT NOT NULL UNIQUE COLLATE NOCASE,  -- stored normalised (lower case)
        name              TEXT NOT NULL DEFAULT '',
        topics            TEXT NOT NULL DEFAULT 'all',  -- 'all', or ';'-joined sorted slugs
        status            TEXT NOT NULL DEFAULT 'subscribed'
                          CHECK (status IN {SUBSCRIBER_STATUSES!r}),
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        status_changed_at TEXT,
        status_reason     TEXT,
        status_source     TEXT CHECK (status_source IN ('import', 'cli', 'web', 'sendgrid'))
    );
    CREATE INDEX subscribers_by_status ON subscribers (status, id);

    -- Append-only: every change of status or topics, so an admin can answer "why?".
    CREATE TABLE history (
        id            INTEGER PRIMARY KEY,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        at            TEXT NOT NULL,
        field         TEXT NOT NULL CHECK (field IN ('created', 'status', 'topics', 'name')),
        old_value     TEXT,
        new_value     TEXT,
        source        TEXT NOT NULL,
        reason        TEXT
    );
    CREATE INDEX history_by_subscriber ON history (subscriber_id, id);
    CREATE TRIGGER history_is_append_only_update BEFORE UPDATE ON history
        BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
    CREATE TRIGGER history_is_append_only_delete BEFORE DELETE ON history
        BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;

    -- One row per issue that has been sent or started.
    CREATE TABLE sends (
        issue_id     TEXT PRIMARY KEY,
        state        TEXT NOT NULL CHECK (state IN ('planned', 'sending', 'sent', 'stopped')),
        backend      TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        finished_at  TEXT,
        send_at      TEXT,           -- scheduled delivery time (SendGrid send_at), if any
        batch_id     TEXT,           -- SendGrid batch id for a scheduled send
        lock_owner   TEXT,           -- 'host:pid:token' of the running send, NULL when none
        lock_at      TEXT,
        last_error   TEXT
    );

    -- The only truth about who got what: one row per (issue, subscriber).
    CREATE TABLE ledger (
        issue_id      TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        segment       TEXT NOT NULL,          -- key of the selection of summaries
        state         TEXT NOT NULL CHECK (state IN {LEDGER_STATES!r}),
        reason        TEXT,                   -- why skipped / failed / unknown
        provider_id   TEXT,                   -- the provider's message id once sent
        attempts      INTEGER NOT NULL DEFAULT 0,
        batch_no      INTEGER,                -- which request carried it
        updated_at    TEXT NOT NULL,
        delivery      TEXT,                   -- from webhooks: 'delivered', 'bounced', 'dropped'
        delivery_at   TEXT,
        PRIMARY KEY (issue_id, subscriber_id)
    ) WITHOUT ROWID;
    CREATE INDEX ledger_by_state ON ledger (issue_id, state, segment, subscriber_id);

    -- Small key/value state: suppression sync watermarks and the like.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    -- Webhook events already applied, so that a replay changes nothing.
    CREATE TABLE webhook_events (
        event_id    TEXT PRIMARY KEY,
        received_at TEXT NOT NULL
    );
    """,
    # 2: the ledger clustered by segment. A send claims and records a segment's rows in id
    # order; keyed by (issue, subscriber) those rows were spread over the whole table, so every
    # batch rewrote about one page per row (1.2 GB of writes for 100,000 recipients). Keyed by
    # (issue, segment, subscriber) a batch touches a few adjacent pages. Nothing ever changes a
    # row's segment. (issue, subscriber) stays unique.
    f"""
    CREATE TABLE ledger_by_segment (
        issue_id      TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        segment       TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN {LEDGER_STATES!r}),
        reason        TEXT,
        provider_id   TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        batch_no      INTEGER,
        updated_at    TEXT NOT NULL,
        delivery      TEXT,
        delivery_at   TEXT,
        PRIMARY KEY (issue_id, segment, subscriber_id)
    ) WITHOUT ROWID;
    INSERT INTO ledger_by_segment SELECT issue_id, subscriber_id, segment, state, reason,
        provider_id, attempts, batch_no, updated_at, delivery, delivery_at FROM ledger;
    DROP TABLE ledger;
    ALTER TABLE ledger_by_segment RENAME TO ledger;
    CREATE UNIQUE INDEX ledger_by_subscriber ON ledger (issue_id, subscriber_id);
    CREATE INDEX ledger_by_state ON ledger (issue_id, state, segment, subscriber_id);
    """,
    # 3: signup with double opt-in. `signup` becomes a status source (SQLite changes a CHECK by
    # rebuilding the table; `Database.migrate` keeps foreign keys off meanwhile and checks them).
    # Unconfirmed signups wait in `signups`, never in `subscribers`; `signup_mailed` and
    # `signup_attempts` hold the per-address and per-client limits (in the database, so that
    # they hold across processes); `consents` is the append-only consent record.
    f"""
    CREATE TABLE subscribers_v3 (
        id                INTEGER PRIMARY KEY,
        email             TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name              TEXT NOT NULL DEFAULT '',
        topics            TEXT NOT NULL DEFAULT 'all',
        status            TEXT NOT NULL DEFAULT 'subscribed'
                          CHECK (status IN {SUBSCRIBER_STATUSES!r}),
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        status_changed_at TEXT,
        status_reason     TEXT,
        status_source     TEXT CHECK (status_source IN {STATUS_SOURCES!r})
    );
    INSERT INTO subscribers_v3 SELECT id, email, name, topics, status, created_at, updated_at,
        status_changed_at, status_reason, status_source FROM subscribers;
    DROP TABLE subscribers;
    ALTER TABLE subscribers_v3 RENAME TO subscribers;
    CREATE INDEX subscribers_by_status ON subscribers (status, id);

    -- A signup waiting for its confirmation. The link's token is random; only its SHA-256 is
    -- kept. Rows go when they expire (`newsletter subscribers purge-pending`, and `serve`).
    CREATE TABLE signups (
        id              INTEGER PRIMARY KEY,
        email           TEXT NOT NULL UNIQUE COLLATE NOCASE,
        token_hash      TEXT NOT NULL UNIQUE,
        name            TEXT NOT NULL DEFAULT '',
        topics          TEXT NOT NULL,
        requested_at    TEXT NOT NULL,
        expires_at      TEXT NOT NULL,
        confirmed_at    TEXT,             -- set by the confirmation: a link works once
        ip              TEXT,             -- as `signup.record_ip` says (full, truncated, NULL)
        user_agent      TEXT,
        form_id         TEXT NOT NULL,
        consent_version TEXT NOT NULL,
        consent_sha256  TEXT NOT NULL,
        privacy_url     TEXT
    );
    CREATE INDEX signups_by_expiry ON signups (expires_at);

    -- When the form last made us email an address (any kind): at most once a day each.
    CREATE TABLE signup_mailed (
        email   TEXT PRIMARY KEY COLLATE NOCASE,
        sent_at TEXT NOT NULL
    );

    -- Signups per client network, keyed by a keyed hash of it (never the address itself).
    CREATE TABLE signup_attempts (
        client TEXT NOT NULL,
        at     TEXT NOT NULL
    );
    CREATE INDEX signup_attempts_by_client ON signup_attempts (client, at);

    -- Every consent sentence ever shown, by its SHA-256, so a record can show what was agreed.
    CREATE TABLE consent_texts (
        sha256        TEXT PRIMARY KEY,
        version       TEXT NOT NULL,
        text          TEXT NOT NULL,
        first_used_at TEXT NOT NULL
    );

    -- Append-only: who consented, when, to what, and how (the form, or an admin's import).
    CREATE TABLE consents (
        id              INTEGER PRIMARY KEY,
        email           TEXT NOT NULL COLLATE NOCASE,
        source          TEXT NOT NULL,    -- 'signup', or 'import: FILE'
        requested_at    TEXT,             -- the form was sent
        confirmed_at    TEXT NOT NULL,    -- the link was confirmed (an import: its time)
        ip              TEXT,
        user_agent      TEXT,
        form_id         TEXT,
        consent_version TEXT,
        consent_sha256  TEXT,
        privacy_url     TEXT,
        topics          TEXT NOT NULL
    );
    CREATE INDEX consents_by_email ON consents (email, id);
    CREATE TRIGGER consents_are_append_only_update BEFORE UPDATE ON consents
        BEGIN SELECT RAISE(ABORT, 'the consent record is append-only'); END;
    CREATE TRIGGER consents_are_append_only_delete BEFORE DELETE ON consents
        BEGIN SELECT RAISE(ABORT, 'the consent record is append-only'); END;
    """,
    # 4: the provider's word on `unknown` rows. `submitted_at`: when the row was last submitted
    # (set when its batch is claimed, and again before a retry), so that `send --retry-unknown`
    # can wait `delivery.unknown_grace` after it for the webhook to say the message was
    # accepted; rows from before have none and fall back to `updated_at`, which is later.
    # `accepted_note`: such word that came while the row was still `submitting` (a crashed
    # send's batch, until the next send recovers it): applied when the row becomes `unknown`.
    """
    ALTER TABLE ledger ADD COLUMN submitted_at TEXT;
    ALTER TABLE ledger ADD COLUMN accepted_note TEXT;
    """,
    # 5: click counts for `report --clicks`, aggregate by default. Nothing here names a
    # subscriber except `click_subscribers`, written only with `tracking.per_subscriber: true`.
    """
    -- The link map of an issue's summaries: a clicked URL (normalised) → summary and kind.
    -- Public URLs only (summary pages, papers), recorded at the issue's first click.
    CREATE TABLE click_links (
        issue_id   TEXT NOT NULL,
        url        TEXT NOT NULL,
        position   INTEGER NOT NULL,   -- the summary's place in the issue
        summary_id TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('summary', 'paper')),
        PRIMARY KEY (issue_id, url, position)
    ) WITHOUT ROWID;

    -- Clicks per (issue, summary, kind of link, day): people's, and automated ones apart.
    -- summary_id is '' for links that belong to no summary (preferences, unsubscribe...).
    CREATE TABLE click_counts (
        issue_id   TEXT NOT NULL,
        summary_id TEXT NOT NULL,
        kind       TEXT NOT NULL,
        day        TEXT NOT NULL,       -- UTC date of the click
        human      INTEGER NOT NULL DEFAULT 0 CHECK (human >= 0),
        automated  INTEGER NOT NULL DEFAULT 0 CHECK (automated >= 0),
        PRIMARY KEY (issue_id, summary_id, kind, day)
    ) WITHOUT ROWID;

    -- The per-issue key under which readers are counted once; NULL once discarded.
    CREATE TABLE click_keys (
        issue_id      TEXT PRIMARY KEY,
        key           BLOB,
        created_at    TEXT NOT NULL,
        discard_after TEXT NOT NULL
    );

    -- Distinct readers per summary: a keyed hash of the recipient under the issue's key, which
    -- no one can recompute once the key is discarded; `human` counts their people's clicks.
    CREATE TABLE click_clickers (
        issue_id   TEXT NOT NULL,
        summary_id TEXT NOT NULL,
        clicker    TEXT NOT NULL,
        human      INTEGER NOT NULL DEFAULT 0 CHECK (human >= 0),
        PRIMARY KEY (issue_id, summary_id, clicker)
    ) WITHOUT ROWID;

    -- The last hour of clicks (by the clicks' own times), to see a scanner following every link
    -- at once after the first of them was counted. Keyed hashes, link kinds: no URL, no id.
    CREATE TABLE click_recent (
        id         INTEGER PRIMARY KEY,
        issue_id   TEXT NOT NULL,
        clicker    TEXT NOT NULL,
        link       TEXT NOT NULL,
        summary_id TEXT NOT NULL,
        kind       TEXT NOT NULL,
        day        TEXT NOT NULL,
        at         REAL NOT NULL,
        automated  INTEGER NOT NULL CHECK (automated IN (0, 1))
    );
    CREATE INDEX click_recent_by_clicker ON click_recent (issue_id, clicker, at);
    CREATE INDEX click_recent_by_time ON click_recent (at);

    -- Only with tracking.per_subscriber: true: who clicked what, and when.
    CREATE TABLE click_subscribers (
        id            INTEGER PRIMARY KEY,
        issue_id      TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        summary_id    TEXT NOT NULL,
        kind          TEXT NOT NULL,
        at            TEXT NOT NULL,
        automated     INTEGER NOT NULL CHECK (automated IN (0, 1))
    );
    CREATE INDEX click_subscribers_by_issue ON click_subscribers (issue_id, subscriber_id, at);
    """,
    # 6: several sending processes (PostgreSQL). Each holds a lease of its own in `send_workers`
    # instead of the one lock in `sends`; `ledger.worker` names the worker that claimed a row,
    # so that a starting worker recovers only the rows of workers that are gone; batch numbers
    # come from `sends.last_batch_no`, taken in the claim's transaction, unique across workers.
    """
    ALTER TABLE ledger ADD COLUMN worker TEXT;
    ALTER TABLE sends ADD COLUMN last_batch_no INTEGER;
    ALTER TABLE sends ADD COLUMN run_id TEXT;   -- the run (one `send` command) that last planned
    CREATE TABLE send_workers (
        issue_id     TEXT NOT NULL,
        worker       TEXT NOT NULL,   -- 'host:pid:token'
        run_id       TEXT NOT NULL,   -- the `send` command it belongs to
        backend      TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,   -- refreshed at every claim
        finished_at  TEXT,            -- NULL while it runs
        outcome      TEXT,            -- 'done', 'stopped', 'abandoned'
        last_error   TEXT,
        PRIMARY KEY (issue_id, worker)
    ) WITHOUT ROWID;
    """,
    # 7: no index on the ledger's `state`. Every claim and every record changes a row's state,
    # so the index was rewritten twice per recipient; on PostgreSQL an indexed column changing
    # also rules out the cheap in-page (HOT) update, so each update wrote a new entry in every
    # index of the ledger. Claims walk the primary key (issue, segment, subscriber) from the
    # sender's last claimed id instead (`ledger.claim`'s `after`); the other queries on `state`
    # run once per send or report, over one issue's rows. PostgreSQL also leaves room in each
    # page for the new versions of its rows (POSTGRESQL[7]).
    """
    DROP INDEX ledger_by_state;
    """,
]


# PostgreSQL -------------------------------------------------------------------------------------
#
# The same list runs on PostgreSQL, each migration rewritten by `to_postgresql` (below): write a
# new migration in the SQL both engines share, and it needs nothing more. A migration that only
# SQLite can run as written (SQLite changes a constraint by rebuilding the table; PostgreSQL
# refuses to drop a table others reference) gets its PostgreSQL text in `POSTGRESQL`, under its
# number. Both engines count versions the same way, in `schema_version`.

# Before migration 1 on PostgreSQL: what SQLite has built in and the store's SQL uses.
POSTGRESQL_PRELUDE = """
-- SQLite's NOCASE: addresses compare ignoring case (unique, lookups, an import's duplicates).
CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
-- SQLite's instr(): the position of a text in another, 0 when absent.
CREATE OR REPLACE FUNCTION instr(haystack text, needle text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT AS 'SELECT strpos(haystack, needle)';
"""

# After migration 1 on PostgreSQL: addresses in code-point order (`Database.bytewise`), which
# SQLite's NOCASE index of lower-case addresses gives for nothing.
POSTGRESQL_BYTEWISE_EMAIL = """
CREATE INDEX subscribers_by_email_bytewise ON subscribers (email COLLATE "C");
"""

_TRIGGER = re.compile(
    r"CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+"
    r"BEGIN SELECT RAISE\(ABORT, '([^']*)'\); END;",
    re.IGNORECASE,
)


def _trigger(match: re.Match) -> str:
    name, event, table, message = match.groups()
    # SQLSTATE 23000 (integrity_constraint_violation): the same kind of error as SQLite's ABORT.
    return (
        f"CREATE FUNCTION {name}_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '23000'; END$$;\n"
        f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {name}_refuse();"
    )


def to_postgresql(script: str) -> str:
    """A migration written for SQLite, in PostgreSQL's words.

    `INTEGER PRIMARY KEY` (SQLite's rowid) → an identity column; every INTEGER → BIGINT (ids
    are 64-bit on both); REAL → DOUBLE PRECISION (8 bytes, as in SQLite), BLOB → BYTEA;
    `WITHOUT ROWID` dropped; a `BEFORE UPDATE|DELETE` trigger that RAISEs
    (append-only tables) → a plpgsql function and its trigger. `COLLATE NOCASE` stays: the
    prelude makes a `nocase` collation.
    """
    out = _TRIGGER.sub(_trigger, script)
    out = re.sub(
        r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", out
    )
    out = re.sub(r"\bINTEGER\b", "BIGINT", out)
    out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)  # PostgreSQL's REAL is 4 bytes
    out = re.sub(r"\bBLOB\b", "BYTEA", out)
    out = re.sub(r"\)\s*WITHOUT ROWID", ")", out)
    return out


_V3_REBUILD_END = "CREATE INDEX subscribers_by_status ON subscribers (status, id);"
assert MIGRATIONS[2].count(_V3_REBUILD_END) == 1

POSTGRESQL: dict[int, str] = {
    1: POSTGRESQL_PRELUDE + to_postgresql(MIGRATIONS[0]) + POSTGRESQL_BYTEWISE_EMAIL,
    # 2 rebuilt the ledger to change its primary key: PostgreSQL changes it in place.
    2: """
    ALTER TABLE ledger DROP CONSTRAINT ledger_pkey,
        ADD PRIMARY KEY (issue_id, segment, subscriber_id);
    CREATE UNIQUE INDEX ledger_by_subscriber ON ledger (issue_id, subscriber_id);
    """,
    # 3 rebuilt `subscribers` to widen a CHECK: PostgreSQL replaces the constraint; the new
    # tables after the rebuild are shared.
    3: f"""
    ALTER TABLE subscribers DROP CONSTRAINT subscribers_status_source_check,
        ADD CONSTRAINT subscribers_status_source_check
        CHECK (status_source IN {STATUS_SOURCES!r});
    """
    + to_postgresql(MIGRATIONS[2].split(_V3_REBUILD_END, 1)[1]),
    # 7: also room in each page for the updated versions of its rows, so that an update can
    # stay in the page (HOT) and write no index entry. A claim updates a whole page's rows in
    # one transaction, whose old versions stay until it commits: half a page is what that
    # takes (at 50,000 recipients 91% of the updates stayed in their page, 44% at fillfactor
    # 100; the table ends no larger, since moved rows grew it as much). New pages get it.
    7: """
    DROP INDEX ledger_by_state;
    ALTER TABLE ledger SET (fillfactor = 50);
    """,
}


def for_engine(engine: str) -> list[str]:
    """Every migration, in order, as `engine` ('sqlite' or 'postgresql') runs it."""
    if engine == "sqlite":
        return list(MIGRATIONS)
    return [
        POSTGRESQL.get(number) or to_postgresql(script)
        for number, script in enumerate(MIGRATIONS, start=1)
    ]
