"""Threads: rebuild conversation chains so that a whole chain can go to the LLM as one unit.

Threads are built over content groups (a message filed in four folders appears once per
chain), in one pass over a compact query:

1. Message ids: In-Reply-To and References link a message to the one it answers (an SQL
   join on the Message-IDs of every copy, then union-find over the linked groups).
2. Subjects, because Enron mail has almost no such headers: a reply or forward (``Re:``,
   ``Fw:``, ``Fwd:``...) joins the latest earlier chain with the same normalised subject
   when the two share a participant (sender or recipient) and the chain's last message is
   at most ``MAX_GAP`` older. A message without such a prefix starts a chain of its own
   unless its headers link it, and a generic subject (empty, "hi", "fyi"...) never links
   on subject alone.

A chain's thread id is its smallest content-group id (the ingest gives every new group a
one-message thread with the group's own id), so ids stay stable across rebuilds and
``rebuild_threads`` writes only what changed: the emails of groups that joined a chain and
the ``threads`` rows whose subject, root, size or dates moved. Running it after an
incremental ingest updates every chain the new mail touched.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from datetime import datetime, timedelta

#: a reply joins a subject chain only if the chain's last message is at most this old
MAX_GAP = timedelta(days=30)

#: normalised subjects too common to say two messages belong together
GENERIC_SUBJECTS = frozenset(
    (
        "hi",
        "hello",
        "hey",
        "fyi",
        "fw",
        "fwd",
        "re",
        "question",
        "questions",
        "thanks",
        "thank you",
        "thx",
        "update",
        "updates",
        "meeting",
        "call",
        "lunch",
        "dinner",
        "test",
        "info",
        "information",
        "request",
        "follow up",
        "follow-up",
        "followup",
        "reminder",
        "note",
        "notes",
        "news",
        "status",
        "misc",
        "stuff",
        "document",
        "documents",
        "attachment",
        "attachments",
        "file",
        "files",
        "see attached",
        "(no subject)",
        "no subject",
        "your message",
        "message",
        "tomorrow",
        "today",
        "tonight",
        "this week",
        "next week",
        "weekend",
        "draft",
        "revised",
        "agenda",
        "minutes",
        "quick question",
        "important",
        "urgent",
        "hello there",
        "greetings",
        "good morning",
        "check this out",
    )
)
_GENERIC_WORDS = frozenset(w for s in GENERIC_SUBJECTS for w in s.split()) | {
    "a",
    "an",
    "the",
    "this",
    "that",
    "for",
    "of",
    "and",
    "my",
    "your",
    "our",
    "me",
    "you",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
}

_REPLY_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:re|fw|fwd|aw|sv|wg|tr|rv|antw|ref)\s*(?:\[\d+\]|\(\d+\))?\s*:",
    re.IGNORECASE,
)


def is_generic_subject(norm_subject: str) -> bool:
    """True for subjects that say nothing about the conversation (never linked on alone)."""
    s = " ".join(norm_subject.lower().split()).strip(" .!?:-")
    if len(s) < 3 or s in GENERIC_SUBJECTS:
        return True
    return all(w in _GENERIC_WORDS for w in s.split())


def is_reply_subject(subject: str) -> bool:
    """True when the subject starts with a reply or forward prefix (Re:, Fw:, Fwd:, AW:...)."""
    return bool(_REPLY_PREFIX.match(subject))


class _UnionFind:
    __slots__ = ("parent",)

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            nxt = parent.get(x, x)
            parent[x] = root
            x = nxt
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent.setdefault(ra, ra)
            self.parent.setdefault(rb, rb)
            # the smaller id stays root: deterministic, and earlier groups usually root
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (name,)).fetchone() is not None


def _people(sender: str, to_addrs: str, cc_addrs: str) -> frozenset[str]:
    people = {sender} if sender else set()
    if to_addrs and to_addrs != "[]":
        people.update(json.loads(to_addrs))
    if cc_addrs and cc_addrs != "[]":
        people.update(json.loads(cc_addrs))
    return frozenset(people)


def _link_subjects(uf: _UnionFind, items: list[tuple]) -> None:
    """Chain one subject's messages: a reply joins the latest chain it shares people with."""
    parsed = []
    for group_id, subject, sender, to_addrs, cc_addrs, date, flag in items:
        when = None if flag == "placeholder" else _parse_date(date)
        parsed.append(
            (when, group_id, is_reply_subject(subject), _people(sender, to_addrs, cc_addrs))
        )
    # dated messages in time order, then the undated ones
    parsed.sort(key=lambda it: (it[0] is None, it[0] or datetime.min, it[1]))
    chains: list[list] = []  # [group id, participants, last date]
    for when, group_id, reply, people in parsed:
        joined = None
        if reply:
            for chain in reversed(chains):
                if not (people & chain[1]):
                    continue
                if when is not None and chain[2] is not None and when - chain[2] > MAX_GAP:
                    continue
                joined = chain
                break
        if joined is None:
            chains.append([group_id, set(people), when])
        else:
            uf.union(group_id, joined[0])
            joined[1] |= people
            if when is not None:
                joined[2] = when


_REF_LINKS_SQL = """
SELECT DISTINCT e.group_id, t.group_id FROM emails e
    JOIN emails t ON t.message_id = e.in_reply_to
    WHERE e.in_reply_to IS NOT NULL AND e.group_id IS NOT NULL AND t.group_id != e.group_id
UNION
SELECT DISTINCT e.group_id, t.group_id FROM emails e, json_each(e.refs) j
    JOIN emails t ON t.message_id = j.value
    WHERE e.refs != '[]' AND e.group_id IS NOT NULL AND t.group_id != e.group_id
"""
_CANONICAL = "content_groups g JOIN emails e ON e.id = g.canonical_email_id"
_SUBJECT_BUCKETS_SQL = f"""
SELECT e.norm_subject, g.id, e.subject, e.sender, e.to_addrs, e.cc_addrs, e.date, e.date_flag
FROM {_CANONICAL}
WHERE e.norm_subject IN (SELECT e.norm_subject FROM {_CANONICAL}
                         GROUP BY e.norm_subject HAVING COUNT(*) > 1)
ORDER BY e.norm_subject
"""
_DATE = "CASE WHEN e.date_flag = 'placeholder' THEN NULL ELSE e.date END"
_CHANGED = (
    "threads.subject IS NOT excluded.subject OR threads.root_email_id IS NOT"
    " excluded.root_email_id OR threads.size IS NOT excluded.size OR threads.first_date IS NOT"
    " excluded.first_date OR threads.last_date IS NOT excluded.last_date"
)
_UPSERT = (
    " ON CONFLICT(id) DO UPDATE SET subject = excluded.subject, root_email_id ="
    " excluded.root_email_id, size = excluded.size, first_date = excluded.first_date,"
    f" last_date = excluded.last_date WHERE {_CHANGED}"
)


def link_groups(conn: sqlite3.Connection) -> dict[int, int]:
    """Chains of two or more content groups: ``{group id: thread id}`` for linked groups only.

    A chain's thread id is its smallest group id; a group missing from the answer is a
    one-message thread whose id is its own group id. Memory grows with the number of linked
    groups and the largest subject bucket, not with the number of emails or copies.
    """
    uf = _UnionFind()
    for a, b in conn.execute(_REF_LINKS_SQL):
        uf.union(a, b)
    bucket: list[tuple] = []
    norm = None
    for row in conn.execute(_SUBJECT_BUCKETS_SQL):
        if row[0] != norm:
            if len(bucket) > 1 and not is_generic_subject(norm or ""):
                _link_subjects(uf, bucket)
            norm, bucket = row[0], []
        bucket.append(row[1:])
    if len(bucket) > 1 and not is_generic_subject(norm or ""):
        _link_subjects(uf, bucket)
    return {g: uf.find(g) for g in list(uf.parent)}


def rebuild_threads(conn: sqlite3.Connection) -> int:
    """Recompute every chain and write ``threads`` and ``emails.thread_id``; returns the count.

    Runs on the writer connection (``store.call(rebuild_threads)``). A thread's id (and key
    ``g<id>``) is the smallest content-group id in the chain, so it survives rebuilds while
    the chain keeps that group; the root email is the chain's earliest message. Only rows
    whose values change are written.
    """
    linked = link_groups(conn)
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS thread_links"
        " (group_id INTEGER PRIMARY KEY, thread_id INTEGER NOT NULL)"
    )
    conn.execute("DELETE FROM temp.thread_links")
    conn.executemany("INSERT INTO temp.thread_links VALUES (?, ?)", linked.items())

    # chains: the earliest message is the root; undated messages sort last
    chains: dict[int, list[tuple]] = defaultdict(list)
    for thread_id, email_id, subject, date in conn.execute(
        f"SELECT l.thread_id, e.id, e.subject, {_DATE} FROM temp.thread_links l"
        " JOIN content_groups g ON g.id = l.group_id JOIN emails e ON e.id = g.canonical_email_id"
    ):
        chains[thread_id].append((date or "\uffff", email_id, subject))
    rows = []
    for thread_id, items in chains.items():
        items.sort()
        dates = [d for d, _, _ in items if d != "\uffff"]
        rows.append(
            (
                thread_id,
                f"g{thread_id}",
                items[0][2],
                items[0][1],
                len(items),
                dates[0] if dates else None,
                dates[-1] if dates else None,
            )
        )
    conn.executemany(
        "INSERT INTO threads (id, thread_key, subject, root_email_id, size, first_date,"
        " last_date) VALUES (?, ?, ?, ?, ?, ?, ?)" + _UPSERT,
        rows,
    )
    # every other group is a one-message thread with its own id
    conn.execute(
        "INSERT INTO threads (id, thread_key, subject, root_email_id, size, first_date,"
        f" last_date) SELECT g.id, 'g' || g.id, e.subject, e.id, 1, {_DATE}, {_DATE}"
        f" FROM {_CANONICAL} WHERE g.id NOT IN (SELECT group_id FROM temp.thread_links)" + _UPSERT
    )
    conn.execute(
        "UPDATE emails SET thread_id = COALESCE((SELECT l.thread_id FROM temp.thread_links l"
        " WHERE l.group_id = emails.group_id), group_id) WHERE group_id IS NOT NULL AND"
        " thread_id IS NOT COALESCE((SELECT l.thread_id FROM temp.thread_links l"
        " WHERE l.group_id = emails.group_id), group_id)"
    )
    # chains that merged into another one: drop their rows unless a result points at them
    used = "SELECT thread_id FROM emails WHERE thread_id IS NOT NULL"
    if _table_exists(conn, "results"):
        conn.execute(
            f"UPDATE threads SET size = 0 WHERE id NOT IN ({used}) AND id IN"
            " (SELECT thread_id FROM results WHERE thread_id IS NOT NULL)"
        )
        used += " UNION SELECT thread_id FROM results WHERE thread_id IS NOT NULL"
    conn.execute(f"DELETE FROM threads WHERE id NOT IN ({used})")
    conn.execute("DELETE FROM temp.thread_links")
    return conn.execute("SELECT COUNT(*) FROM threads WHERE size > 0").fetchone()[0]
