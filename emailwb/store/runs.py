"""Runs and their provenance, the work units, results and priority profiles, in the store.

A *run* is a named pass of one configuration over the store: ``emailwb.settings.
RunConfig`` says how (backend, model, prompt mode, concurrency, retries, layout); the
``runs`` row records it with the provenance the backend reports (model digest, server
slots, template and schema hashes). Running again under the same name resumes: only units without a result in that
run are pending, so nothing committed is ever asked again.

A *unit* is what one LLM call covers: a content group (its canonical email, the default),
a whole thread (chain mode) or a single email (``dedup=False``, the reference design).
Units are ordered by ``priority_score(email_type, base, weights)`` with weights from a named
*priority profile* (table ``priority_profiles``) that can change while a run is going.

"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from emailwb.errors import ConfigError, ProcessingError
from emailwb.mail.detect import detect_text, priority_score
from emailwb.mail.message import Email

if TYPE_CHECKING:
    from emailwb.store.database import Store

UnitKind = Literal["group", "thread", "email"]
UNIT_COLUMN: dict[str, str] = {"group": "group_id", "thread": "thread_id", "email": "email_id"}
DEFAULT_PROFILE = "default"
DEFAULT_WEIGHTS: dict[str, float] = {"*": 1.0}


def now_iso() -> str:
    """UTC now as SQLite's ``strftime('%Y-%m-%dT%H:%M:%f')`` writes it (sortable text)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


# --- runs ------------------------------------------------------------------------------------
@dataclass(slots=True)
class RunRecord:
    """One row of ``runs``; ``config`` is the stored JSON, decoded."""

    id: int
    name: str
    unit: str
    config: dict[str, Any]
    status: str
    total_units: int | None
    progress: str | None
    started_at: str
    updated_at: str
    ended_at: str | None


def _record(row: Any) -> RunRecord:
    return RunRecord(
        row["id"],
        row["name"],
        row["unit"],
        json.loads(row["config"]),
        row["status"],
        row["total_units"],
        row["progress"],
        row["started_at"],
        row["updated_at"],
        row["ended_at"],
    )


def get_run(store: Store, run: str | int | None = None) -> RunRecord | None:
    """A run by name or id; the latest run when ``run`` is None; None if there is none."""
    if run is None:
        row = store.query_one("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
    elif isinstance(run, int):
        row = store.query_one("SELECT * FROM runs WHERE id = ?", (run,))
    else:
        row = store.query_one("SELECT * FROM runs WHERE name = ?", (run,))
    return _record(row) if row is not None else None


def list_runs(store: Store) -> list[RunRecord]:
    """Every run, oldest first."""
    return [_record(r) for r in store.query("SELECT * FROM runs ORDER BY id")]


async def open_run(store: Store, name: str, unit: str, config: dict[str, Any]) -> RunRecord:
    """Create the run, or resume the one with this name (its unit kind must match).

    A resumed run keeps its first configuration; the new one is appended to
    ``config["resumes"]`` so a change of model or template stays visible.
    """
    text = json.dumps(config, sort_keys=True, default=str)

    def fn(conn: sqlite3.Connection) -> tuple[int, str | None]:
        row = conn.execute("SELECT id, unit, config FROM runs WHERE name = ?", (name,)).fetchone()
        now = now_iso()
        if row is None:
            cur = conn.execute(
                "INSERT INTO runs (name, unit, config, status, started_at, updated_at) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                (name, unit, text, now, now),
            )
            return int(cur.lastrowid or 0), None
        if row[1] != unit:
            return int(row[0]), row[1]
        old = json.loads(row[2])
        if {k: v for k, v in old.items() if k != "resumes"} != config:
            old.setdefault("resumes", []).append({"at": now, "config": config})
        conn.execute(
            "UPDATE runs SET status = 'running', updated_at = ?, ended_at = NULL, "
            "config = ? WHERE id = ?",
            (now, json.dumps(old, sort_keys=True, default=str), row[0]),
        )
        return int(row[0]), None

    run_id, other_unit = await store.acall(fn)
    if other_unit is not None:
        raise ProcessingError(
            f"run {name!r} exists with one unit per {other_unit}, but this configuration makes "
            f"one per {unit} (chain/dedup changed)",
            hint="pick another --run-name, or rerun with the run's original chain/dedup setting",
        )
    record = get_run(store, run_id)
    assert record is not None
    return record


def set_run_status(
    store: Store,
    run_id: int,
    status: str,
    *,
    progress: str | None = None,
    total: int | None = None,
    ended: bool = False,
) -> None:
    """Queue a status update of a run (committed with the writer's next batch)."""
    now = now_iso()
    store.submit(
        "UPDATE runs SET status = ?, updated_at = ?, progress = COALESCE(?, progress), "
        "total_units = COALESCE(?, total_units), ended_at = CASE WHEN ? THEN ? ELSE ended_at END "
        "WHERE id = ?",
        (status, now, progress, total, int(ended), now, run_id),
    )


# --- priority profiles --------------------------------------------------------------------------
def check_weights(weights: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in weights.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"priority weight for {key!r} is not a number: {value!r}",
                hint='use numbers, e.g. {"deal": 3, "newsletter": 0.1}',
            ) from None
        if out[str(key)] < 0:
            raise ConfigError(
                f"priority weight for {key!r} is negative",
                hint="use 0 to push a type to the back of the queue",
            )
    return out


def profile_sql(name: str, weights: dict[str, float]) -> tuple[str, tuple[Any, ...]]:
    """The upsert that stores a profile (for ``store.submit``)."""
    return (
        "INSERT INTO priority_profiles (name, weights, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET weights = excluded.weights, "
        "updated_at = excluded.updated_at",
        (name, json.dumps(check_weights(weights), sort_keys=True), now_iso()),
    )


def save_profile(store: Store, name: str, weights: dict[str, float]) -> None:
    """Create or replace a priority profile and wait until it is committed (not in a loop)."""
    store.submit(*profile_sql(name, weights))
    store.flush()


async def asave_profile(store: Store, name: str, weights: dict[str, float]) -> None:
    """``save_profile`` for asyncio: a running processor picks it up within seconds."""
    store.submit(*profile_sql(name, weights))
    await store.aflush()


def load_profile(store: Store, name: str) -> tuple[dict[str, float], str | None]:
    """(weights, updated_at); the neutral ``{"*": 1.0}`` and None when it does not exist."""
    row = store.query_one(
        "SELECT weights, updated_at FROM priority_profiles WHERE name = ?", (name,)
    )
    if row is None:
        return dict(DEFAULT_WEIGHTS), None
    return check_weights(json.loads(row["weights"])), row["updated_at"]


# --- units ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class UnitInfo:
    """A pending unit: its id, the messages it covers and what orders it."""

    id: int
    emails: int
    types: tuple[tuple[str, float], ...]  # (email_type, base) of its content; threads: many

    def score(self, weights: dict[str, float]) -> float:
        return max(priority_score(t, b, weights) for t, b in self.types)


def count_units(store: Store, unit: str) -> int:
    """How many units of this kind the store holds."""
    sql = {
        "group": "SELECT COUNT(*) FROM content_groups WHERE canonical_email_id IS NOT NULL",
        "thread": "SELECT COUNT(*) FROM threads",
        "email": "SELECT COUNT(*) FROM emails",
    }[unit]
    return int(store.scalar(sql) or 0)


def detect_missing(store: Store) -> int:
    """Run the type detector on content groups without a type; queue the types to be written.

    Blocking (a few ms per email: run it in a thread); returns how many were detected. The
    types are stored in ``content_groups``, so each email is detected once per store.
    """
    rows = store.query(
        "SELECT g.id, e.subject, substr(e.new_text, 1, 4000) AS new_text, "
        "substr(e.forwarded, 1, 4000) AS forwarded, substr(e.body, 1, 4000) AS body, "
        "e.sender, e.sender_name FROM content_groups g JOIN emails e ON e.id = g.canonical_email_id "
        "WHERE g.email_type IS NULL"
    )
    out = []
    for r in rows:
        new = r["new_text"] or ""
        text = (
            new
            if len(new.strip()) >= 20
            else (f"{new}\n{r['forwarded'] or ''}".strip() or r["body"] or "")
        )
        found = detect_text(
            r["subject"] or "", text, f"{r['sender'] or ''} {r['sender_name'] or ''}".strip()
        )
        out.append((found.email_type, found.score, r["id"]))
    if out:
        store.submit_many(
            "UPDATE content_groups SET email_type = ?, priority = ? WHERE id = ?", out
        )
    return len(out)


def load_pending(store: Store, run_id: int, unit: str) -> list[UnitInfo]:
    """Units without a result in this run, with what their priority needs (blocking)."""
    col = UNIT_COLUMN[unit]
    done = f"NOT EXISTS (SELECT 1 FROM results r WHERE r.run_id = ? AND r.{col} = u.id)"
    other = "COALESCE(g.email_type, 'other'), COALESCE(g.priority, 0.3)"
    if unit == "group":
        rows = store.query(
            f"SELECT u.id, u.size, COALESCE(u.email_type, 'other'), COALESCE(u.priority, 0.3) "
            f"FROM content_groups u WHERE u.canonical_email_id IS NOT NULL AND {done}",
            (run_id,),
        )
        return [UnitInfo(r[0], max(int(r[1] or 1), 1), ((r[2], r[3]),)) for r in rows]
    if unit == "email":
        rows = store.query(
            f"SELECT u.id, {other} FROM emails u LEFT JOIN content_groups g ON g.id = u.group_id "
            f"WHERE {done}",
            (run_id,),
        )
        return [UnitInfo(r[0], 1, ((r[1], r[2]),)) for r in rows]
    rows = store.query(
        f"SELECT u.id, u.size, {other} FROM threads u JOIN emails e ON e.thread_id = u.id "
        f"LEFT JOIN content_groups g ON g.id = e.group_id WHERE {done} "
        f"GROUP BY u.id, g.email_type, g.priority",
        (run_id,),
    )
    units: dict[int, UnitInfo] = {}
    for r in rows:
        info = units.setdefault(r[0], UnitInfo(r[0], max(int(r[1] or 1), 1), ()))
        info.types = (*info.types, (r[2], r[3]))
    return list(units.values())


def unit_email_ids(store: Store, unit: str, ids: list[int]) -> dict[int, list[int]]:
    """The emails to put in each unit's prompt: the canonical email, or a thread's distinct
    messages oldest first (one per content group)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    if unit == "email":
        return {i: [i] for i in ids}
    if unit == "group":
        rows = store.query(
            f"SELECT id, canonical_email_id FROM content_groups WHERE id IN ({marks})", ids
        )
        return {r[0]: [r[1]] for r in rows}
    rows = store.query(
        f"SELECT thread_id, MIN(id) AS id, MIN(COALESCE(date, '')) AS d FROM emails "
        f"WHERE thread_id IN ({marks}) GROUP BY thread_id, COALESCE(group_id, -id) "
        f"ORDER BY thread_id, d, id",
        ids,
    )
    out: dict[int, list[int]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1])
    return out


#: the columns a prompt needs (quotes, signatures and the like stay in the store)
_PROMPT_COLUMNS = (
    "id, message_id, date, sender, sender_name, to_addrs, subject, new_text, "
    "forwarded, CASE WHEN ? OR length(trim(new_text)) < 20 THEN body ELSE '' END "
    "AS body"
)


def stored_date(value: str | None) -> datetime | None:
    """An ISO 8601 date as the store keeps it (UTC when naive); None when empty or bad."""
    if not value:
        return None
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def stored_list(value: str | None) -> list[str]:
    """A JSON list of strings as the store keeps it (addresses); [] when empty or bad."""
    if not value or value == "[]":
        return []
    try:
        got = json.loads(value)
    except ValueError:
        return []
    return [str(x) for x in got] if isinstance(got, list) else []


def load_emails(store: Store, ids: list[int], *, raw: bool = False) -> dict[int, Email]:
    """``Email`` records by id with what a prompt needs (blocking; batch the ids).

    Headers, new text and forwarded text; the whole body only with ``raw`` (or when the new
    text is nearly empty, where the templates fall back to it). Quoted text, signatures and
    disclaimers are not loaded: read the ``emails`` table for those.
    """
    out: dict[int, Email] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = store.query(
            f"SELECT {_PROMPT_COLUMNS} FROM emails WHERE id IN ({','.join('?' * len(chunk))})",
            [int(raw), *chunk],
        )
        for r in rows:
            out[r[0]] = Email(
                message_id=r[1],
                date=stored_date(r[2]),
                date_flag=None,
                sender=r[3],
                sender_name=r[4],
                to=stored_list(r[5]),
                subject=r[6],
                new_text=r[7],
                forwarded=r[8],
                body=r[9],
            )
    return out


# --- results ------------------------------------------------------------------------------------
def run_counts(store: Store, run_id: int) -> dict[str, int]:
    """done, failed and emails_done of a run, from committed results."""
    row = store.query_one(
        "SELECT SUM(status = 'done'), SUM(status = 'failed'), "
        "SUM(CASE WHEN status = 'done' THEN emails ELSE 0 END) FROM results WHERE run_id = ?",
        (run_id,),
    )
    return (
        {"done": int(row[0] or 0), "failed": int(row[1] or 0), "emails_done": int(row[2] or 0)}
        if row
        else {"done": 0, "failed": 0, "emails_done": 0}
    )


def retry_failed(store: Store, run: str | int | None = None) -> int:
    """Re-queue a run's failures (their results are deleted); returns how many.

    Blocking; for the CLI. A running ``Processor`` has ``await processor.retry_failed()``.
    The next ``run_batch`` under the run's name processes them.
    """
    record = get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}" if run is not None else "there is no run yet",
            hint="see `emailwb status --json` for the runs in this database",
        )
    fut = store.call(
        lambda conn: (
            conn.execute(
                "DELETE FROM results WHERE run_id = ? AND status = 'failed'", (record.id,)
            ).rowcount
        )
    )
    return int(fut.result())


def results_df(store: Store, run: str | int | None = None) -> Any:
    """Every email of the store with its run's result (polars DataFrame): the export's content.

    Emails the run has not reached yet are there too, with ``status`` ``pending`` and no
    result columns, so an export of a partial run still lists the whole mailbox.
    """
    record = get_run(store, run)
    if record is None:
        raise ProcessingError("no such run", hint="see `emailwb status --json` for the runs")
    return store.query_df(
        "SELECT e.id AS email_id, e.message_id, e.date, e.sender, e.subject, e.mailbox, "
        "e.folder, x.unit, x.unit_id, COALESCE(x.status, 'pending') AS status, x.reason, "
        "x.data, r.template_name, r.template_version, r.truncated, r.model, r.endpoint, "
        "r.latency_s, r.prompt_tokens, r.completion_tokens "
        "FROM emails e LEFT JOIN email_results x ON x.email_id = e.id AND x.run_id = ? "
        "LEFT JOIN results r ON r.id = x.result_id ORDER BY e.id",
        (record.id,),
    )
