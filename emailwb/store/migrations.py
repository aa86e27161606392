"""Schema changes as an ordered list of named migration functions.

Each migration is a function taking a ``sqlite3.Connection``; ``MIGRATIONS`` lists them in
order and the store records every applied name in ``schema_migrations``. Never edit a
migration once it has shipped: append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def m0001_core(conn: sqlite3.Connection) -> None:
    """Raw messages, parsed emails, content groups, threads, ingest sources and errors."""
    conn.executescript(
        """
        CREATE TABLE sources (            -- files / containers already ingested (incremental ingest)
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,           -- eml | maildir-file | mbox | csv | parquet
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            messages INTEGER NOT NULL DEFAULT 0,
            ingested_at TEXT NOT NULL
        );
        CREATE TABLE raw_messages (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,  -- of the raw bytes: ingesting twice adds nothing
            raw BLOB NOT NULL,
            size INTEGER NOT NULL,
            source TEXT NOT NULL,         -- path, or path#N inside an mbox/csv/parquet
            ingested_at TEXT NOT NULL
        );
        CREATE TABLE content_groups (     -- copies of the same email: one LLM call per group
            id INTEGER PRIMARY KEY,
            content_key TEXT NOT NULL UNIQUE,
            canonical_email_id INTEGER,
            size INTEGER NOT NULL DEFAULT 0,
            email_type TEXT,              -- filled by the rule-based detector
            priority REAL
        );
        CREATE TABLE threads (
            id INTEGER PRIMARY KEY,
            thread_key TEXT NOT NULL UNIQUE,
            subject TEXT,
            root_email_id INTEGER,
            size INTEGER NOT NULL DEFAULT 0,
            first_date TEXT,
            last_date TEXT
        );
        CREATE TABLE emails (
            id INTEGER PRIMARY KEY,
            raw_id INTEGER NOT NULL UNIQUE REFERENCES raw_messages(id),
            message_id TEXT NOT NULL,
            date TEXT,                    -- ISO 8601 UTC, NULL when missing/unparseable
            date_flag TEXT,
            sender TEXT NOT NULL DEFAULT '',
            sender_name TEXT NOT NULL DEFAULT '',
            to_addrs TEXT NOT NULL DEFAULT '[]',   -- JSON lists
            cc_addrs TEXT NOT NULL DEFAULT '[]',
            bcc_addrs TEXT NOT NULL DEFAULT '[]',
            subject TEXT NOT NULL DEFAULT '',
            norm_subject TEXT NOT NULL DEFAULT '',
            in_reply_to TEXT,
            refs TEXT NOT NULL DEFAULT '[]',
            mailbox TEXT NOT NULL DEFAULT '',
            folder TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            body TEXT NOT NULL DEFAULT '',
            new_text TEXT NOT NULL DEFAULT '',
            quoted TEXT NOT NULL DEFAULT '',
            forwarded TEXT NOT NULL DEFAULT '',
            signature TEXT NOT NULL DEFAULT '',
            disclaimer TEXT NOT NULL DEFAULT '',
            charset TEXT NOT NULL DEFAULT '',
            defects TEXT NOT NULL DEFAULT '[]',
            body_chars INTEGER NOT NULL DEFAULT 0,
            new_chars INTEGER NOT NULL DEFAULT 0,
            group_id INTEGER REFERENCES content_groups(id),
            thread_id INTEGER REFERENCES threads(id)
        );
        CREATE INDEX emails_message_id ON emails(message_id);
        CREATE INDEX emails_group ON emails(group_id);
        CREATE INDEX emails_thread ON emails(thread_id);
        CREATE INDEX emails_norm_subject ON emails(norm_subject);
        CREATE TABLE ingest_errors (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            reason TEXT NOT NULL,         -- one actionable sentence
            detail TEXT,
            size INTEGER,
            sha256 TEXT,
            raw_head BLOB,                -- first 64 KiB, so nothing is lost for small files
            created_at TEXT NOT NULL,
            UNIQUE (source, sha256)
        );
        """
    )


def m0002_runs_results(conn: sqlite3.Connection) -> None:
    """Runs with their provenance, one result per unit and run, priority profiles.

    A unit is a content group (the default), a whole thread (chain mode) or a single email
    (no deduplication, the ``reference`` design); exactly one of ``group_id``,
    ``thread_id`` and ``email_id`` is set. ``email_results`` gives every email its result.
    """
    conn.executescript(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            unit TEXT NOT NULL,            -- group | thread | email
            config TEXT NOT NULL,          -- JSON: backend, urls, model+digest, options, template
                                           -- version+hash, schema hash, slots, concurrency, mode
            status TEXT NOT NULL,          -- created | running | paused | stopped | completed | failed
            total_units INTEGER,
            progress TEXT,                 -- JSON: the latest metrics snapshot (for `status`)
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            group_id INTEGER REFERENCES content_groups(id),
            thread_id INTEGER REFERENCES threads(id),
            email_id INTEGER REFERENCES emails(id),
            status TEXT NOT NULL,          -- done | failed
            data TEXT,                     -- validated JSON (done only)
            raw TEXT,                      -- the reply text as received (kept for failures)
            error TEXT,                    -- exception class (failed only)
            reason TEXT,                   -- one actionable sentence (failed only)
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            latency_s REAL,
            ttft_s REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            endpoint TEXT,
            model TEXT,
            template_name TEXT,
            template_version TEXT,
            truncated INTEGER NOT NULL DEFAULT 0,
            emails INTEGER NOT NULL DEFAULT 1, -- messages this result covers (copies, thread size)
            created_at TEXT NOT NULL,
            UNIQUE (run_id, group_id),
            UNIQUE (run_id, thread_id),
            UNIQUE (run_id, email_id)
        );
        CREATE INDEX results_run_status ON results(run_id, status);
        CREATE TABLE priority_profiles (
            name TEXT PRIMARY KEY,
            weights TEXT NOT NULL,         -- JSON {email_type: weight, "*": default}
            updated_at TEXT NOT NULL
        );
        CREATE VIEW email_results AS
            SELECT r.run_id, e.id AS email_id, r.id AS result_id, 'group' AS unit,
                   r.group_id AS unit_id, r.status, r.data, r.reason
            FROM results r JOIN emails e ON e.group_id = r.group_id
            WHERE r.group_id IS NOT NULL
            UNION ALL
            SELECT r.run_id, e.id, r.id, 'thread', r.thread_id, r.status, r.data, r.reason
            FROM results r JOIN emails e ON e.thread_id = r.thread_id
            WHERE r.thread_id IS NOT NULL
            UNION ALL
            SELECT r.run_id, r.email_id, r.id, 'email', r.email_id, r.status, r.data, r.reason
            FROM results r
            WHERE r.email_id IS NOT NULL;
        """
    )


def m0003_quality(conn: sqlite3.Connection) -> None:
    """Quality beside each result: metrics, judge opinions, the audit queue and labels.

    ``results.phase`` records which configuration a unit ran under (the run's own, or the
    baseline after a drift rollback). ``quality`` holds one row of automatic metrics per
    result (``unit_id`` is the id in the run's unit column); ``judgements`` the second
    opinion on sampled units; ``audit_queue`` and ``audits`` the human review;
    ``run_events`` drift alerts, pauses and rollbacks; ``comparisons`` A/B verdicts.
    """
    conn.executescript(
        """
        ALTER TABLE results ADD COLUMN phase TEXT;   -- configuration label: main | baseline
        CREATE TABLE quality (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            unit_id INTEGER NOT NULL,
            phase TEXT,
            content_key TEXT,
            sampled INTEGER NOT NULL DEFAULT 0,     -- chosen for the deep check
            schema_valid INTEGER NOT NULL,
            truncated INTEGER NOT NULL DEFAULT 0,
            completeness REAL,
            response_chars INTEGER,
            grounding REAL,                         -- share of extracted values in the text
            grounding_people REAL,
            grounding_organizations REAL,
            grounding_amounts REAL,
            grounding_dates REAL,
            ungrounded_people INTEGER,
            ungrounded_organizations INTEGER,
            ungrounded_amounts INTEGER,
            ungrounded_dates INTEGER,
            ungrounded_total INTEGER,
            evidence_grounded INTEGER,
            amounts_in_text INTEGER,
            amounts_missed INTEGER,
            amount_recall REAL,
            type_agrees INTEGER,
            priority_agrees INTEGER,
            rule_type TEXT,
            rule_priority TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, unit_id)
        );
        CREATE TABLE judgements (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            unit_id INTEGER NOT NULL,
            status TEXT NOT NULL,                   -- done | failed
            verdict TEXT,                           -- JSON {field: correct|incorrect|unsure}
            overall INTEGER,
            notes TEXT,
            error TEXT,                             -- why the judge failed (failed only)
            model TEXT,
            endpoint TEXT,
            latency_s REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, unit_id)
        );
        CREATE TABLE audit_queue (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            unit_id INTEGER NOT NULL,
            reason TEXT NOT NULL,                   -- sample | manual | drift
            added_at TEXT NOT NULL,
            PRIMARY KEY (run_id, unit_id)
        );
        CREATE TABLE audits (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            unit_id INTEGER NOT NULL,
            field TEXT NOT NULL,                    -- a judged field, or '*' for the note alone
            label TEXT CHECK (label IN ('correct', 'incorrect')),
            note TEXT NOT NULL DEFAULT '',
            auditor TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            UNIQUE (run_id, unit_id, field)
        );
        CREATE TABLE run_events (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            kind TEXT NOT NULL,                     -- drift_alert | pause | rollback
            message TEXT NOT NULL,
            detail TEXT,                            -- JSON
            created_at TEXT NOT NULL
        );
        CREATE INDEX run_events_run ON run_events(run_id);
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            run_a INTEGER NOT NULL REFERENCES runs(id),
            run_b INTEGER NOT NULL REFERENCES runs(id),
            margin REAL NOT NULL,
            verdict TEXT NOT NULL,                  -- non-inferior | inferior | inconclusive
            detail TEXT NOT NULL,                   -- JSON: the whole comparison
            created_at TEXT NOT NULL
        );
        """
    )


def m0004_facts(conn: sqlite3.Connection) -> None:
    """The facts of each email (``emailwb.facts``), computed once and reused by every run."""
    conn.executescript(
        """
        CREATE TABLE facts (
            email_id INTEGER PRIMARY KEY REFERENCES emails(id),
            version TEXT NOT NULL,                  -- extractors' version: stale rows are redone
            data TEXT NOT NULL,                     -- JSON: facts with spans, and the judgment
            created_at TEXT NOT NULL
        );
        """
    )


def m0005_quality_checked(conn: sqlite3.Connection) -> None:
    """How many extracted values each result's grounding checked (a run's share = 1 -
    ungrounded / checked, summed over its results)."""
    conn.execute("ALTER TABLE quality ADD COLUMN checked_total INTEGER")


def m0006_prompts(conn: sqlite3.Connection) -> None:
    """Prompt versions (immutable, by name and content hash) and the prompt lab's replies,
    one per prompt hash, plan, model and email (so trying a draft again asks nothing)."""
    conn.executescript(
        """
        CREATE TABLE prompts (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL,
            content TEXT NOT NULL,                  -- JSON: the version's parts
            based_on TEXT,                          -- the version it was drafted from
            warning TEXT,                           -- set when it failed validation on a sample
            created_at TEXT NOT NULL
        );
        CREATE TABLE lab_replies (
            prompt_hash TEXT NOT NULL,
            plan TEXT NOT NULL,
            model TEXT NOT NULL,                    -- backend, endpoint set and model asked
            email_id INTEGER NOT NULL REFERENCES emails(id),
            ok INTEGER NOT NULL,
            data TEXT,                              -- JSON: the composed result
            error TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (prompt_hash, plan, model, email_id)
        );
        """
    )


def m0007_batch_out(conn: sqlite3.Connection) -> None:
    """Units written to batch request files (``emailwb batch export``), one row per unit of
    a run: which file and line, under which custom_id, so a second export skips them and
    ``status`` tells what is out and what came back."""
    conn.executescript(
        """
        CREATE TABLE batch_out (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            unit_id INTEGER NOT NULL,
            custom_id TEXT NOT NULL,
            file TEXT NOT NULL,
            line INTEGER NOT NULL,
            exported_at TEXT NOT NULL,
            PRIMARY KEY (run_id, unit_id)
        );
        """
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_core", m0001_core),
    ("0002_runs_results", m0002_runs_results),
    ("0003_quality", m0003_quality),
    ("0004_facts", m0004_facts),
    ("0005_quality_checked", m0005_quality_checked),
    ("0006_prompts", m0006_prompts),
    ("0007_batch_out", m0007_batch_out),
]
