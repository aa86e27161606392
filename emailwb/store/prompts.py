"""Prompt versions and the prompt lab's replies, as rows.

The store keeps what ``emailwb.engine.library`` saves: a version's name, content hash and
parts (JSON), never changed once written, and the replies the lab got for a (prompt hash,
plan, model, email), so a draft tried twice is answered from here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from emailwb.store.runs import now_iso

if TYPE_CHECKING:
    from emailwb.store.database import Store


def prompt_row(store: Store, name: str) -> dict[str, Any] | None:
    """The stored version called ``name``: {"name", "hash", "content", "based_on", "warning",
    "created_at"}, or None."""
    row = store.query_one("SELECT * FROM prompts WHERE name = ?", (name,))
    if row is None:
        return None
    return {**dict(row), "content": json.loads(row["content"])}


def prompt_rows(store: Store) -> list[dict[str, Any]]:
    """Every stored version, oldest first (content left out)."""
    rows = store.query(
        "SELECT name, hash, based_on, warning, created_at FROM prompts ORDER BY created_at, name"
    )
    return [dict(r) for r in rows]


def insert_prompt(
    store: Store,
    name: str,
    digest: str,
    content: dict[str, Any],
    *,
    based_on: str | None = None,
    warning: str | None = None,
) -> None:
    """Write a version (the caller has checked that the name is free)."""
    store.submit(
        "INSERT INTO prompts (name, hash, content, based_on, warning, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, digest, json.dumps(content, ensure_ascii=False), based_on, warning, now_iso()),
    )
    store.flush()


def lab_replies(
    store: Store, prompt_hash: str, plan: str, model: str, email_ids: list[int]
) -> dict[int, dict[str, Any]]:
    """The replies already stored for these emails, by email id."""
    if not email_ids:
        return {}
    marks = ",".join("?" * len(email_ids))
    rows = store.query(
        f"SELECT * FROM lab_replies WHERE prompt_hash = ? AND plan = ? AND model = ? "
        f"AND email_id IN ({marks})",
        (prompt_hash, plan, model, *email_ids),
    )
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        item = dict(r)
        item["data"] = json.loads(r["data"]) if r["data"] else None
        item["ok"] = bool(r["ok"])
        out[int(r["email_id"])] = item
    return out


def save_lab_replies(store: Store, rows: list[dict[str, Any]]) -> None:
    """Keep replies (a row per email: prompt_hash, plan, model, email_id, ok, data, error,
    prompt_tokens, completion_tokens, latency_s); an existing one is kept as it was."""
    store.submit_many(
        "INSERT OR IGNORE INTO lab_replies (prompt_hash, plan, model, email_id, ok, data, "
        "error, prompt_tokens, completion_tokens, latency_s, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r["prompt_hash"],
                r["plan"],
                r["model"],
                r["email_id"],
                int(bool(r["ok"])),
                json.dumps(r["data"], allow_nan=False) if r.get("data") is not None else None,
                r.get("error"),
                r.get("prompt_tokens"),
                r.get("completion_tokens"),
                r.get("latency_s"),
                now_iso(),
            )
            for r in rows
        ],
    )
    store.flush()
