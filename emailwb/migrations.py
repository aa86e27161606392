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


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_core", m0001_core),
]
