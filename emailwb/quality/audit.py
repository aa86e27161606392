"""Human audits: the audit queue, per-field correct/incorrect labels, accuracy with intervals.

The deep-check sample of every run (``scoring``: every ``sample_every``-th content key)
enters ``audit_queue``; ``add_to_queue`` adds others by hand. ``load_item`` gives one
queued result with its email (cleaned and raw), the extracted JSON, the grounding of each
extracted value and the judge's opinion; ``save_labels`` stores a person's per-field
labels and note in ``audits`` (one row per field; saving again replaces them);
``accuracy`` is the share of fields labelled correct, per field, with Wilson intervals, and
how often the judge agreed with the person
(``gold.audit_truth`` turns the fields marked correct into hand labels). ``AuditPanel`` is the notebook front end
(``notebooks/04_audit.ipynb``); every piece of email content it shows is HTML-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import ConfigError, ProcessingError
from emailwb.quality.grounding import Grounding, grounding
from emailwb.quality.measures import JUDGED_FIELDS
from emailwb.quality.stats import wilson_interval
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

AUDIT_FIELDS = JUDGED_FIELDS
LABELS = ("correct", "incorrect")


def audit_run(store: Store, run: str | int | None) -> runs.RunRecord:
    """The run to audit (the latest when ``run`` is None), or a clear error."""
    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}" if run is not None else "there is no run yet",
            hint="process some emails first (`emailwb run`), then audit",
        )
    return record


@dataclass(slots=True)
class AuditItem:
    """One queued result, with everything an auditor looks at."""

    run_id: int
    run_name: str
    unit_id: int
    reason: str
    status: str | None  # the result's: done | failed | None (no result)
    data: dict[str, Any] | None
    emails: list[dict[str, Any]]  # headers, cleaned text (new + forwarded) and raw body
    grounding: Grounding | None
    judge: dict[str, Any] | None  # verdict per field, overall, notes
    labels: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def subject(self) -> str:
        return str(self.emails[0].get("subject") or "") if self.emails else ""


def queue_df(
    store: Store, run: str | int | None = None, *, pending_only: bool = False
) -> pl.DataFrame:
    """The audit queue of a run: unit, why it is there, subject, judge score, labels so far."""
    record = audit_run(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    first = {
        "group": "(SELECT canonical_email_id FROM content_groups WHERE id = a.unit_id)",
        "thread": "(SELECT MIN(id) FROM emails WHERE thread_id = a.unit_id)",
        "email": "a.unit_id",
    }[record.unit]
    where = " AND labelled = 0" if pending_only else ""
    return store.query_df(
        f"SELECT * FROM (SELECT a.unit_id, a.reason, a.added_at, r.status, e.subject, e.sender, "
        f"j.overall AS judge_overall, j.status AS judge_status, "
        f"(SELECT COUNT(*) FROM audits u WHERE u.run_id = a.run_id AND u.unit_id = a.unit_id "
        f"AND u.label IS NOT NULL) AS labelled FROM audit_queue a "
        f"LEFT JOIN results r ON r.run_id = a.run_id AND r.{col} = a.unit_id "
        f"LEFT JOIN emails e ON e.id = {first} "
        f"LEFT JOIN judgements j ON j.run_id = a.run_id AND j.unit_id = a.unit_id "
        f"WHERE a.run_id = ?) WHERE 1 = 1{where} ORDER BY unit_id",
        (record.id,),
    )


def add_to_queue(
    store: Store, run: str | int | None, unit_ids: Iterable[int], reason: str = "manual"
) -> None:
    """Put units of a run into its audit queue (already queued ones stay as they are)."""
    record = audit_run(store, run)
    now = runs.now_iso()
    store.submit_many(
        "INSERT OR IGNORE INTO audit_queue (run_id, unit_id, reason, added_at) VALUES (?, ?, ?, ?)",
        [(record.id, int(u), reason, now) for u in unit_ids],
    )
    store.flush()


def load_item(store: Store, run: str | int | None, unit_id: int) -> AuditItem:
    """One unit of a run with its email(s), JSON, grounding, judge verdict and labels."""
    from emailwb.quality.scoring import unit_texts

    record = audit_run(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    res = store.query_one(
        f"SELECT status, data FROM results WHERE run_id = ? AND {col} = ?", (record.id, unit_id)
    )
    queued = store.query_one(
        "SELECT reason FROM audit_queue WHERE run_id = ? AND unit_id = ?", (record.id, unit_id)
    )
    ids = runs.unit_email_ids(store, record.unit, [unit_id]).get(unit_id, [])
    emails = []
    if ids:
        rows = store.query(
            "SELECT id, message_id, date, sender, sender_name, to_addrs, subject, new_text, "
            f"forwarded, body FROM emails WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id",
            ids,
        )
        emails = [dict(r) for r in rows]
    data = json.loads(res["data"]) if res is not None and res["data"] else None
    ground = None
    if data is not None:
        text = unit_texts(store, record.unit, [unit_id]).get(unit_id)
        if text is not None:
            ground = grounding(data, text.full_text, sent=text.sent)
    j = store.query_one(
        "SELECT status, verdict, overall, notes, error FROM judgements "
        "WHERE run_id = ? AND unit_id = ?",
        (record.id, unit_id),
    )
    judge = None
    if j is not None:
        judge = {
            "status": j["status"],
            "verdict": json.loads(j["verdict"]) if j["verdict"] else {},
            "overall": j["overall"],
            "notes": j["notes"],
            "error": j["error"],
        }
    labels, note = {}, ""
    for r in store.query(
        "SELECT field, label, note FROM audits WHERE run_id = ? AND unit_id = ?",
        (record.id, unit_id),
    ):
        if r["field"] == "*":
            note = r["note"]
        elif r["label"]:
            labels[r["field"]] = r["label"]
    return AuditItem(
        record.id,
        record.name,
        unit_id,
        queued["reason"] if queued else "manual",
        res["status"] if res is not None else None,
        data,
        emails,
        ground,
        judge,
        labels,
        note,
    )


def save_labels(
    store: Store,
    run: str | int | None,
    unit_id: int,
    labels: Mapping[str, str | None],
    note: str = "",
    auditor: str = "",
) -> int:
    """Store per-field labels ("correct"/"incorrect"; None clears one) and a note; how many."""
    record = audit_run(store, run)
    bad = [f for f in labels if f not in AUDIT_FIELDS]
    if bad:
        raise ConfigError(f"unknown audit fields {bad}", hint=f"use {', '.join(AUDIT_FIELDS)}")
    wrong = {v for v in labels.values() if v is not None and v not in LABELS}
    if wrong:
        raise ConfigError(
            f"labels must be 'correct' or 'incorrect', not {sorted(wrong)}",
            hint="pass None to clear a field's label",
        )
    now = runs.now_iso()
    upsert = (
        "INSERT INTO audits (run_id, unit_id, field, label, note, auditor, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, unit_id, field) DO UPDATE SET "
        "label = excluded.label, note = excluded.note, auditor = excluded.auditor, "
        "created_at = excluded.created_at"
    )
    rows: list[tuple[int, int, str, str | None, str, str, str]] = [
        (record.id, unit_id, f, v, "", auditor, now) for f, v in labels.items() if v
    ]
    rows.append((record.id, unit_id, "*", None, note, auditor, now))
    cleared = [(record.id, unit_id, f) for f, v in labels.items() if v is None]
    if cleared:
        store.submit_many(
            "DELETE FROM audits WHERE run_id = ? AND unit_id = ? AND field = ?", cleared
        )
    store.submit_many(upsert, rows)
    store.flush()
    return len(rows) - 1


def labels_df(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """Every label of a run: unit, field, label, auditor, time, and the judge's verdict."""
    record = audit_run(store, run)
    rows = store.query(
        "SELECT u.unit_id, u.field, u.label, u.auditor, u.created_at, j.verdict FROM audits u "
        "LEFT JOIN judgements j ON j.run_id = u.run_id AND j.unit_id = u.unit_id "
        "AND j.status = 'done' WHERE u.run_id = ? AND u.label IS NOT NULL ORDER BY u.unit_id",
        (record.id,),
    )
    out = [
        {
            "unit_id": r["unit_id"],
            "field": r["field"],
            "label": r["label"],
            "auditor": r["auditor"],
            "created_at": r["created_at"],
            "judge": (json.loads(r["verdict"]) if r["verdict"] else {}).get(r["field"]),
        }
        for r in rows
    ]
    return pl.DataFrame(
        out,
        schema={
            "unit_id": pl.Int64,
            "field": pl.Utf8,
            "label": pl.Utf8,
            "auditor": pl.Utf8,
            "created_at": pl.Utf8,
            "judge": pl.Utf8,
        },
    )


def accuracy(store: Store, run: str | int | None = None, confidence: float = 0.95) -> pl.DataFrame:
    """Per field: labelled n, correct, accuracy with its Wilson interval, judge agreement."""
    df = labels_df(store, run)
    rows = []
    for f in AUDIT_FIELDS:
        sub = df.filter(pl.col("field") == f)
        n = sub.height
        ok = sub.filter(pl.col("label") == "correct").height
        low, high = wilson_interval(ok, n, confidence)
        judged = sub.filter(pl.col("judge").is_in(list(LABELS)))
        agree = judged.filter(pl.col("judge") == pl.col("label")).height
        rows.append(
            {
                "field": f,
                "n": n,
                "correct": ok,
                "accuracy": ok / n if n else None,
                "low": low if n else None,
                "high": high if n else None,
                "judge_n": judged.height,
                "judge_agrees": agree / judged.height if judged.height else None,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "field": pl.Utf8,
            "n": pl.Int64,
            "correct": pl.Int64,
            "accuracy": pl.Float64,
            "low": pl.Float64,
            "high": pl.Float64,
            "judge_n": pl.Int64,
            "judge_agrees": pl.Float64,
        },
    )


# --- presentation ---------------------------------------------------------------------------
