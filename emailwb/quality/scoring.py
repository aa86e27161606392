"""Per-result quality rows: compute each result's automatic metrics and store them beside it.

The processor's quality watch (``emailwb.quality.watch``) calls ``score_units`` in a worker thread
for each group of freshly committed results; ``ensure_quality`` computes the rows a run
lacks (results from before quality existed, or a crash between a result and its metrics);
``quality_df`` reads them back joined with their results.

Which text a result is checked against:

* grounding (invented people, organizations, amounts, dates) searches the header lines
  plus the WHOLE body of every email the unit covers: a value found anywhere in the
  message is not invented, whatever part of it the configuration sent to the model;
* amounts missed looks at the email's own content (new text and forwarded text; the body
  when the new text is nearly empty), the same for every configuration: money in quoted
  replies belongs to the earlier email, which has its own result.

The deep-check choice (``quality.deep_check_sample``) uses the content key (a content
group's key; a thread's key in chain mode), so two runs over the same mailbox sample the
same emails whatever their unit kind or order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import ProcessingError
from emailwb.facts.money import find_money
from emailwb.mail.detect import Detection
from emailwb.quality.grounding import AMOUNT_SLOTS, amounts_missed, grounding_text
from emailwb.quality.measures import QualityMetrics, deep_check_sample, metrics_for
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

MAX_BODY_CHARS = 30_000  # per email: prompts are far shorter; keeps grounding cheap
METRIC_COLUMNS = tuple(QualityMetrics.__dataclass_fields__)
_COLUMNS = (
    "run_id",
    "unit_id",
    "phase",
    "content_key",
    "sampled",
    *METRIC_COLUMNS,
    "rule_type",
    "rule_priority",
    "created_at",
)
QUALITY_SQL = (
    f"INSERT INTO quality ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(run_id, unit_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
)
AUDIT_QUEUE_SQL = (
    "INSERT OR IGNORE INTO audit_queue (run_id, unit_id, reason, added_at) VALUES (?, ?, ?, ?)"
)


@dataclass(slots=True)
class Outcome:
    """What a unit produced: the validated data, or (schema failure) only the raw reply."""

    unit_id: int
    data: dict[str, Any] | None
    raw: str | None
    truncated: bool = False
    schema_valid: bool = True
    phase: str | None = None


@dataclass(slots=True)
class UnitText:
    """A unit's emails as the checks need them."""

    unit_id: int
    content_key: str
    rule_type: str | None
    rule_priority: str | None  # the detector's score as low|medium|high|urgent
    full_text: str  # headers + whole bodies: what grounding searches
    own_text: str  # headers + new and forwarded text: where amounts are expected
    sent: datetime | None


@dataclass(slots=True)
class Scored:
    """One unit's quality row, and what the watch needs besides it."""

    unit_id: int
    content_key: str
    sampled: bool
    metrics: dict[str, Any]
    full_text: str
    params: tuple[Any, ...]


@dataclass(slots=True)
class _Mail:
    sender: str
    sender_name: str
    to: list[str]
    cc: list[str]
    subject: str
    date: datetime | None
    body: str
    new_text: str
    forwarded: str


def _chunks(ids: Sequence[int], n: int = 500) -> Iterable[list[int]]:
    for i in range(0, len(ids), n):
        yield list(ids[i : i + n])


_UNIT_SQL = {
    "group": "SELECT g.id AS unit_id, g.content_key AS key, g.email_type, g.priority "
    "FROM content_groups g WHERE g.id IN ({marks})",
    "email": "SELECT e.id AS unit_id, COALESCE(g.content_key, 'message:' || e.message_id) AS key, "
    "g.email_type, g.priority FROM emails e LEFT JOIN content_groups g "
    "ON g.id = e.group_id WHERE e.id IN ({marks})",
    "thread": "SELECT t.id AS unit_id, t.thread_key AS key, g.email_type, g.priority "
    "FROM threads t LEFT JOIN emails e ON e.id = t.root_email_id "
    "LEFT JOIN content_groups g ON g.id = e.group_id WHERE t.id IN ({marks})",
}


def unit_texts(store: Store, unit: str, ids: Sequence[int]) -> dict[int, UnitText]:
    """The texts, content key and rule-based type/priority of each unit (blocking)."""
    if unit not in _UNIT_SQL:
        raise ProcessingError(f"unknown unit kind {unit!r}", hint="use group, thread or email")
    ids = sorted(set(ids))
    meta: dict[int, Any] = {}
    for chunk in _chunks(ids):
        sql = _UNIT_SQL[unit].format(marks=",".join("?" * len(chunk)))
        meta.update({r["unit_id"]: r for r in store.query(sql, chunk)})
    members = runs.unit_email_ids(store, unit, ids)
    email_ids = sorted({e for m in members.values() for e in m})
    mails: dict[int, _Mail] = {}
    for chunk in _chunks(email_ids):
        rows = store.query(
            "SELECT id, date, sender, sender_name, to_addrs, cc_addrs, subject, "
            f"substr(body, 1, {MAX_BODY_CHARS}) AS body, substr(new_text, 1, {MAX_BODY_CHARS}) "
            f"AS new_text, substr(forwarded, 1, {MAX_BODY_CHARS}) AS forwarded FROM emails "
            f"WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for r in rows:
            mails[r["id"]] = _Mail(
                r["sender"] or "",
                r["sender_name"] or "",
                runs.stored_list(r["to_addrs"]),
                runs.stored_list(r["cc_addrs"]),
                r["subject"] or "",
                runs.stored_date(r["date"]),
                r["body"] or "",
                r["new_text"] or "",
                r["forwarded"] or "",
            )
    out: dict[int, UnitText] = {}
    for uid in ids:
        chain = [mails[e] for e in members.get(uid, []) if e in mails]
        if not chain:
            continue
        full, own = [], []
        for m in chain:
            full.append(grounding_text(m, body=m.body))
            new = m.new_text if len(m.new_text.strip()) >= 20 else ""
            own.append(grounding_text(m, body=f"{new}\n{m.forwarded}".strip() if new else m.body))
        row = meta.get(uid)
        rtype = row["email_type"] if row is not None else None
        score = row["priority"] if row is not None else None
        out[uid] = UnitText(
            uid,
            str(row["key"]) if row is not None and row["key"] else f"{unit}:{uid}",
            rtype,
            Detection(rtype or "other", float(score)).priority_hint if score is not None else None,
            "\n\n".join(full),
            "\n\n".join(own),
            chain[0].date,
        )
    return out


def unit_metrics(outcome: Outcome, text: UnitText) -> QualityMetrics:
    """``quality.metrics_for`` with grounding on the full text and amounts on the own text."""
    m = metrics_for(
        outcome.data,
        text.full_text,
        raw=outcome.raw,
        schema_valid=outcome.schema_valid,
        truncated=outcome.truncated,
        rule_type=text.rule_type,
        rule_priority=text.rule_priority,
        sent=text.sent,
    )
    missed = len(amounts_missed(outcome.data, text.own_text))
    in_text = len({(round(abs(x.value), 6), x.unit.lower()) for x in find_money(text.own_text)})
    recall = min(1.0, (in_text - missed) / min(in_text, AMOUNT_SLOTS)) if in_text else None
    return replace(m, amounts_in_text=in_text, amounts_missed=missed, amount_recall=recall)


def score_units(
    store: Store,
    run_id: int,
    unit: str,
    outcomes: Sequence[Outcome],
    *,
    every: int = 100,
    salt: str = "",
) -> list[Scored]:
    """Quality rows for ``outcomes`` of one run (blocking: call it in a worker thread).

    Units whose emails are gone are left out. Nothing is written: submit
    ``QUALITY_SQL`` with each ``Scored.params`` (``write_scored`` does).
    """
    texts = unit_texts(store, unit, [o.unit_id for o in outcomes])
    now = runs.now_iso()
    out: list[Scored] = []
    for o in outcomes:
        text = texts.get(o.unit_id)
        if text is None:
            continue
        m = unit_metrics(o, text)
        metrics = {c: getattr(m, c) for c in METRIC_COLUMNS}  # flat: asdict() is 10x slower
        sampled = deep_check_sample(text.content_key, every, salt=salt)
        params = (
            run_id,
            o.unit_id,
            o.phase,
            text.content_key,
            int(sampled),
            *(int(v) if isinstance(v, bool) else v for v in metrics.values()),
            text.rule_type,
            text.rule_priority,
            now,
        )
        out.append(Scored(o.unit_id, text.content_key, sampled, metrics, text.full_text, params))
    return out


def write_scored(store: Store, run_id: int, scored: Sequence[Scored]) -> None:
    """Queue the quality rows, and the sampled units into the audit queue (fire and forget)."""
    if scored:
        store.submit_many(QUALITY_SQL, [s.params for s in scored])
    now = runs.now_iso()
    sampled = [(run_id, s.unit_id, "sample", now) for s in scored if s.sampled]
    if sampled:
        store.submit_many(AUDIT_QUEUE_SQL, sampled)


def _run(store: Store, run: str | int | None) -> runs.RunRecord:
    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}" if run is not None else "there is no run yet",
            hint="see `emailwb status --json` for the runs in this database",
        )
    return record


def ensure_quality(
    store: Store,
    run: str | int | None = None,
    *,
    every: int | None = None,
    salt: str | None = None,
    batch: int = 200,
) -> int:
    """Compute and store the quality rows a run's results lack; how many (blocking).

    Done results and schema failures get a row; other failures (network, refusals) say
    nothing about quality and get none. ``every``/``salt`` default to the run's recorded
    deep-check settings (100 and "" when it has none).
    """
    record = _run(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    qcfg = record.config.get("quality") or {}
    every = int(every if every is not None else qcfg.get("sample_every", 100))
    salt = str(salt if salt is not None else qcfg.get("salt", ""))
    rows = store.query(
        f"SELECT r.{col} AS unit_id, r.status, r.data, r.raw, r.truncated, r.phase FROM results r "
        f"WHERE r.run_id = ? AND (r.status = 'done' OR r.error = 'SchemaViolation') AND NOT EXISTS "
        f"(SELECT 1 FROM quality q WHERE q.run_id = r.run_id AND q.unit_id = r.{col})",
        (record.id,),
    )
    outcomes = [
        Outcome(
            r["unit_id"],
            json.loads(r["data"]) if r["data"] else None,
            r["raw"],
            bool(r["truncated"]),
            r["status"] == "done",
            r["phase"],
        )
        for r in rows
    ]
    n = 0
    for i in range(0, len(outcomes), batch):
        scored = score_units(
            store, record.id, record.unit, outcomes[i : i + batch], every=every, salt=salt
        )
        write_scored(store, record.id, scored)
        n += len(scored)
    if n:
        store.flush()
    return n


def quality_df(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """A run's quality rows joined with their results (status, phase, latency, tokens)."""
    record = _run(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    metric_cols = ", ".join(f"q.{c}" for c in METRIC_COLUMNS)
    return store.query_df(
        f"SELECT q.unit_id, q.content_key, q.sampled, COALESCE(r.phase, q.phase) AS phase, "
        f"r.id AS result_id, r.status, r.latency_s, r.emails, r.created_at, r.endpoint, r.model, "
        f"{metric_cols}, q.rule_type, q.rule_priority FROM quality q "
        f"LEFT JOIN results r ON r.run_id = q.run_id AND r.{col} = q.unit_id "
        f"WHERE q.run_id = ? ORDER BY r.id",
        (record.id,),
    )


def run_grounding(store: Store, run_id: int) -> float | None:
    """The share of a run's extracted values found in their emails (None before any is scored)."""
    row = store.query_one(
        "SELECT SUM(checked_total - ungrounded_total), SUM(checked_total) "
        "FROM quality WHERE run_id = ? AND checked_total IS NOT NULL",
        (run_id,),
    )
    if row is None or not row[1]:
        return None
    return float(row[0]) / float(row[1])
