"""The reference design's policies, in one place: what the original setup did, kept only so
that emailwb's design can be measured against it (``RunConfig.reference()``, the A/B
baseline of ``bench/`` and ``--preset reference``).

The core paths ask this module and never test for the reference themselves:

* ``laid_out(config, messages)``: the prompt's layout. The reference puts the email first and
  the instructions after it in one user message, so no two requests share a cacheable
  prefix; emailwb's layout keeps the shared instructions first.
* ``nap_between(config)``: seconds to wait after each email before the next (the original's
  fixed 2 s sleep); emailwb's is 0.
* ``writer_for(store, run_id, config)``: the result writer. The reference opens a new SQLite
  connection, inserts, commits and closes for every result; emailwb's batches its writes
  through the store's one writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

from emailwb.llm.prompts import USER_LEAD
from emailwb.store.results import ResultWriter

if TYPE_CHECKING:
    from emailwb.settings import RunConfig
    from emailwb.store.database import Store


def email_first(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The reference layout: one user message, the email first and the instructions after,
    so no two requests share a prompt prefix (the original design's prompt)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    email = user[len(USER_LEAD) :] if user.startswith(USER_LEAD) else user
    return [
        {
            "role": "user",
            "content": f"Email:\n{email}\n\n{system}\n\n"
            "Analyse the email above and reply with the JSON object only.",
        }
    ]


def laid_out(config: RunConfig, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages as ``config.layout`` sends them."""
    return email_first(messages) if config.layout == "email_first" else messages


def nap_between(config: RunConfig) -> float:
    """Seconds to wait after each email (the reference's fixed sleep), 0 for emailwb's."""
    return max(config.sleep_between, 0.0)


class PerWriteConnectionWriter(ResultWriter):
    """The reference design's write: open, insert, commit, close, for every result."""

    async def _write(self, params: tuple[Any, ...]) -> None:
        await asyncio.to_thread(_insert_alone, str(self.store.path), self.sql, params)


def _insert_alone(path: str, sql: str, params: tuple[Any, ...]) -> None:
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def writer_for(store: Store, run_id: int, config: RunConfig) -> ResultWriter:
    """The result writer ``config.write_mode`` asks for."""
    if config.write_mode == "connection_per_write":
        return PerWriteConnectionWriter(store, run_id, config.unit)
    return ResultWriter(store, run_id, config.unit)
