"""The facts of each email, computed once per store and reused by every run and plan.

``facts_for(store, email_ids)`` returns each email's ``Analysed`` (facts with spans, the
judgment baselines and the body the spans point into), reading the ``facts`` table and
computing what is missing or stale (another ``FACTS_VERSION``) in this thread; the rows are
queued on the store's writer. ``ensure_facts(store, processes=N)`` does every content group
of a mailbox up front, spreading spaCy over ``N`` worker processes: the stage before the
LLM, or the whole job for the ``facts`` plan.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from emailwb.facts import Facts, Judgment, extract_many, judge
from emailwb.mail.message import Email
from emailwb.store.runs import now_iso, stored_list

#: bump when an extractor or rule changes what it finds: stored facts of another version are redone
FACTS_VERSION = "6"  # 5: action items (asks), one entry per distinct amount; 6: asks retuned, money tables need a currency
CHUNK = 64  # emails per spaCy batch (and per worker task)
PROCESS_MIN = 600  # fewer emails than this: workers would spend longer loading spaCy
_COLUMNS = (
    "id, message_id, subject, sender, sender_name, to_addrs, cc_addrs, body, new_text, "
    "forwarded, signature"
)
UPSERT_SQL = (
    "INSERT INTO facts (email_id, version, data, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(email_id) DO UPDATE SET version = excluded.version, "
    "data = excluded.data, created_at = excluded.created_at"
)


@dataclass(slots=True)
class Analysed:
    """What the deterministic sources say about one email."""

    facts: Facts
    judgment: Judgment
    text: str  # the body the spans point into

    def as_json(self) -> str:
        return json.dumps(
            {"facts": self.facts.as_dict(), "judgment": self.judgment._asdict()},
            separators=(",", ":"),
        )


def _emails(store: Any, ids: Sequence[int]) -> dict[int, Email]:
    out: dict[int, Email] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        rows = store.query(
            f"SELECT {_COLUMNS} FROM emails WHERE id IN ({','.join('?' * len(chunk))})", chunk
        )
        for r in rows:
            out[r[0]] = Email(
                message_id=r[1],
                date=None,
                date_flag=None,
                subject=r[2],
                sender=r[3],
                sender_name=r[4],
                to=stored_list(r[5]),
                cc=stored_list(r[6]),
                body=r[7],
                new_text=r[8],
                forwarded=r[9],
                signature=r[10],
            )
    return out


def analyse(emails: Sequence[Email]) -> list[Analysed]:
    """Facts and judgment of each email (spaCy once over the batch)."""
    facts = extract_many(emails)
    return [
        Analysed(f, judge(e, f.action_items), e.body.replace("\r\n", "\n"))
        for f, e in zip(facts, emails, strict=True)
    ]


def _analyse_json(emails: list[Email]) -> list[str]:
    """(worker process) ``analyse`` with the results as JSON, cheap to send back."""
    return [a.as_json() for a in analyse(emails)]


def _stored(store: Any, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        rows = store.query(
            f"SELECT email_id, data FROM facts WHERE version = ? AND email_id IN "
            f"({','.join('?' * len(chunk))})",
            [FACTS_VERSION, *chunk],
        )
        for r in rows:
            out[r[0]] = json.loads(r[1])
    return out


def _from_json(data: dict[str, Any], text: str) -> Analysed:
    return Analysed(Facts.from_dict(data["facts"]), Judgment(**data["judgment"]), text)


def facts_for(store: Any, email_ids: Sequence[int]) -> dict[int, Analysed]:
    """(blocking) The facts of these emails, from the store or computed now (and stored)."""
    ids = sorted(set(email_ids))
    if not ids:
        return {}
    emails = _emails(store, ids)
    stored = _stored(store, ids)
    out = {
        i: _from_json(d, emails[i].body.replace("\r\n", "\n"))
        for i, d in stored.items()
        if i in emails
    }
    missing = [i for i in ids if i in emails and i not in out]
    if missing:
        done = analyse([emails[i] for i in missing])
        now = now_iso()
        store.submit_many(
            UPSERT_SQL,
            [(i, FACTS_VERSION, a.as_json(), now) for i, a in zip(missing, done, strict=True)],
        )
        out.update(zip(missing, done, strict=True))
    return out


def missing_ids(store: Any) -> list[int]:
    """Canonical emails of content groups without current facts."""
    rows = store.query(
        "SELECT g.canonical_email_id FROM content_groups g LEFT JOIN facts f "
        "ON f.email_id = g.canonical_email_id AND f.version = ? "
        "WHERE g.canonical_email_id IS NOT NULL AND f.email_id IS NULL "
        "ORDER BY g.canonical_email_id",
        (FACTS_VERSION,),
    )
    return [int(r[0]) for r in rows]


def ensure_facts(
    store: Any,
    *,
    processes: int | None = None,
    on_progress: Callable[[int, int], Any] | None = None,
) -> int:
    """(blocking) Facts for every content group that lacks them; returns how many were made.

    ``processes`` spaCy workers (default: the machine's cores); 1 works in this process.
    ``on_progress(done, total)`` is called after each chunk.
    """
    ids = missing_ids(store)
    if not ids:
        return 0
    processes = max(1, processes or os.cpu_count() or 1)
    chunks = [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
    done = 0

    def save(chunk: list[int], rows: list[str]) -> None:
        nonlocal done
        now = now_iso()
        store.submit_many(
            UPSERT_SQL, [(i, FACTS_VERSION, data, now) for i, data in zip(chunk, rows, strict=True)]
        )
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, len(ids))

    if processes == 1 or len(ids) < PROCESS_MIN:
        for chunk in chunks:
            emails = _emails(store, chunk)
            save(chunk, _analyse_json([emails[i] for i in chunk]))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
            pending = []
            for chunk in chunks:
                emails = _emails(store, chunk)
                pending.append((chunk, pool.submit(_analyse_json, [emails[i] for i in chunk])))
            for chunk, fut in pending:
                save(chunk, fut.result())
    store.flush()
    return done


def bodies(store: Any, ids: Sequence[int]) -> dict[int, str]:
    """(blocking) The bodies of these emails: the text evidence spans point into."""
    out: dict[int, str] = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = store.query(
            f"SELECT id, body FROM emails WHERE id IN ({','.join('?' * len(chunk))})", chunk
        )
        out.update((r[0], (r[1] or "").replace("\r\n", "\n")) for r in rows)
    return out


def candidates_note(analysed: Analysed, fields: Sequence[str]) -> str:
    """The candidates of a plan's choice fields, as the prompt lists them after the email."""
    if not fields:
        return ""
    lines = ["Candidates found in the email (choose only among these):"]
    for name in fields:
        values = analysed.facts.candidates(name)
        lines.append(f"{name}: " + (json.dumps(values) if values else "[] (none: leave it empty)"))
    return "\n".join(lines)
