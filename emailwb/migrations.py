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


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_core", m0001_core),
    ("0002_runs_results", m0002_runs_results),
]
