"""Deduplication: group copies of the same email so that one LLM call serves every copy.

Mail clients file one message in several folders (Enron's ``sent``, ``_sent_mail``,
``all_documents``, ``discussion_threads``...), each copy with its own Message-ID and path.
Copies share a *content key*: a hash of the sender, the date in UTC, the whitespace-normalised
subject and the whitespace-normalised body. Every email row points at its ``content_groups``
row; the group names one canonical copy (a copy outside the catch-all folders, then the
shortest path) and counts its copies. Grouping is incremental: the ingest looks up each new
message's key, and a new copy of a known message joins the existing group (``add_copies``);
``refresh_groups`` / ``finalize_groups`` recompute sizes and canonical copies in SQL.

``pairwise_precision_recall`` scores a grouping against a reference grouping by counting
pairs through group sizes (never by enumerating pairs).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Hashable, Mapping
from datetime import datetime

#: catch-all folders whose copies are the last choice for the canonical email
_WHITESPACE = b" \t\n\r\x0b\x0c"
CATCH_ALL_FOLDERS = ("all_documents", "all documents", "discussion_threads", "discussion threads")


def content_key(sender: str, date: datetime | None, subject: str, body: str) -> str:
    """The key shared by every copy of one message (32 hex characters).

    The date is compared as a POSIX timestamp (UTC, to the second), so that copies whose Date headers were written
    in different time zones still match; the subject is compared with every run of whitespace
    collapsed to one space, the body with all ASCII whitespace removed (line endings,
    trailing blanks and re-wrapping do not matter; removing is a C-level ``bytes.translate``,
    much cheaper than splitting the text into words).
    """
    when = str(int(date.timestamp())) if date is not None else ""
    head = "\x1f".join((sender.strip().lower(), when, " ".join(subject.split()), ""))
    h = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=16)
    h.update(body.encode("utf-8", "surrogatepass").translate(None, _WHITESPACE))
    return h.hexdigest()


def canonical_rank(folder: str, source: str) -> tuple[int, int, str]:
    """Sort key of a copy: the lowest is the group's canonical email (ties: the first stored).

    A copy outside the catch-all folders comes first, then the one with the shortest path.
    """
    low_folder, low_source = folder.lower(), source.lower()
    catch_all = any(name in low_folder or f"/{name}/" in low_source for name in CATCH_ALL_FOLDERS)
    return (1 if catch_all else 0, len(source), source)


def _canonical_rank_sql() -> str:
    likes = " OR ".join(
        f"lower(e.folder) LIKE '%{name}%' OR lower(e.source) LIKE '%/{name}/%'"
        for name in CATCH_ALL_FOLDERS
    )
    return f"CASE WHEN {likes} THEN 1 ELSE 0 END"


def add_copies(conn: sqlite3.Connection, copies: dict[int, list[tuple[tuple, int]]]) -> None:
    """Count new copies into their groups and re-pick the canonical email where one ranks
    better: ``copies`` maps group id to ``[(canonical_rank(...), email id), ...]``.

    Incremental and cheap: one read of the current canonical copies, then small updates of
    ``content_groups`` rows only. Runs on the writer connection.
    """
    if not copies:
        return
    ids = list(copies)
    current = {
        gid: (canonical_rank(folder, source), eid)
        for i in range(0, len(ids), 500)
        for gid, eid, folder, source in conn.execute(
            "SELECT g.id, e.id, e.folder, e.source FROM content_groups g"
            " JOIN emails e ON e.id = g.canonical_email_id"
            f" WHERE g.id IN ({','.join('?' * len(ids[i : i + 500]))})",
            ids[i : i + 500],
        )
    }
    updates = []
    for gid, new in copies.items():
        best = min([*new, current[gid]]) if gid in current else min(new)
        updates.append((len(new), best[1], gid))
    conn.executemany(
        "UPDATE content_groups SET size = size + ?, canonical_email_id = ? WHERE id = ?", updates
    )


_REFRESH_SQL = f"""
UPDATE content_groups SET
    size = (SELECT COUNT(*) FROM emails e WHERE e.group_id = content_groups.id),
    canonical_email_id = (
        SELECT e.id FROM emails e WHERE e.group_id = content_groups.id
        ORDER BY {_canonical_rank_sql()}, length(e.source), e.source, e.id
        LIMIT 1)
WHERE id IN (SELECT value FROM json_each(?))
"""


def refresh_groups(conn: sqlite3.Connection, group_ids: list[int]) -> None:
    """Recount copies and re-pick the canonical email of the given groups.

    The canonical copy is one outside the catch-all folders (``all_documents``,
    ``discussion_threads``), then the one with the shortest path, then the first stored.
    Runs on the writer connection.
    """
    if group_ids:
        conn.execute(_REFRESH_SQL, (json.dumps(group_ids),))


def finalize_groups(conn: sqlite3.Connection, since_email_id: int = 0) -> None:
    """``refresh_groups`` for every group holding an email with ``id > since_email_id``."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT group_id FROM emails WHERE id > ? AND group_id IS NOT NULL",
            (since_email_id,),
        )
    ]
    refresh_groups(conn, ids)


def pairwise_precision_recall(
    pred: Mapping[Hashable, Hashable], truth: Mapping[Hashable, Hashable]
) -> tuple[float, float]:
    """Pairwise precision and recall of the grouping ``pred`` against ``truth``.

    Both map an item (a path, an email id) to its group label. A pair of items is positive
    when both sit in the same group. Precision = pairs together in both / pairs together in
    ``pred``; recall = pairs together in both / pairs together in ``truth``. Only items in
    ``truth`` are scored; an item missing from ``pred`` counts as a group of its own. Computed
    from group sizes in O(n): a group of n items holds n*(n-1)/2 pairs. A grouping without
    any pair scores 1.0 (nothing claimed, nothing missed).
    """
    missing = object()
    pred_sizes: Counter[Hashable] = Counter()
    truth_sizes: Counter[Hashable] = Counter()
    both_sizes: Counter[tuple[Hashable, Hashable]] = Counter()
    for item, true_group in truth.items():
        pred_group = pred.get(item, missing)
        if pred_group is missing:
            pred_group = ("__missing__", item)
        pred_sizes[pred_group] += 1
        truth_sizes[true_group] += 1
        both_sizes[(pred_group, true_group)] += 1

    def pairs(sizes: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in sizes.values())

    together = pairs(both_sizes)
    pred_pairs, truth_pairs = pairs(pred_sizes), pairs(truth_sizes)
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / truth_pairs if truth_pairs else 1.0
    return precision, recall
