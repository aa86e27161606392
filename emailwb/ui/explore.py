"""Looking at a mailbox and a run with polars and plotly: the analysis behind the notebooks.

Job: turn the store into polars frames (``emails_frame``, ``latest_results``,
``pending_queue``) and those frames into plotly figures: volume over time, by folder and
by sender, the detected email types, thread sizes, the duplicate rate, and how much text
cleaning removed (quotes, forwards, signatures, disclaimers). The priority helpers score
a pending queue with per-type weights (``score_queue``) and compare two orderings
(``rank_moves``) for the priorities panel. Functions take a ``Store`` (or a frame) and
return frames, dicts or figures; nothing here draws in HTML, so nothing needs escaping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl

from emailwb.mail.detect import TYPE_BASE, priority_score
from emailwb.store import runs
from emailwb.store.database import Store

#: email types in the order the panels list them (the detector's types, most valuable first)
TYPES: list[str] = list(TYPE_BASE)


def open_store(db: str | Path) -> Store:
    """The store at ``db`` (created and migrated when new)."""
    return Store(Path(db).expanduser())


def ingest_mailbox(
    store: Store,
    paths: str | Path | list[str | Path],
    *,
    progress: bool = True,
    workers: int | None = None,
) -> Any:
    """Ingest maildirs/mbox/eml/CSV/Parquet into the store (incremental); the summary.

    The progress bar is ``tqdm.auto``'s: a widget in a notebook, text in a terminal.
    """
    from emailwb.store.ingest import ingest

    given = [paths] if isinstance(paths, str | Path) else list(paths)
    return ingest(store, given, progress=progress, workers=workers)


def ensure_ingested(store: Store, mailbox: str | Path | None) -> Any:
    """Ingest ``mailbox`` when the store holds no email yet; None when nothing was done."""
    if mailbox and not store.scalar("SELECT COUNT(*) FROM emails"):
        return ingest_mailbox(store, mailbox)
    return None


def detect_types(store: Store) -> int:
    """Run the rule-based type detector on content groups without a type (committed)."""
    n = runs.detect_missing(store)
    if n:
        store.flush()
    return n


# --- frames --------------------------------------------------------------------------------
def emails_frame(store: Store) -> pl.DataFrame:
    """One row per stored email with what the explore charts need (no bodies)."""
    return store.query_df(
        "SELECT e.id, e.date, substr(e.date, 1, 7) AS month, e.sender, e.mailbox, e.folder, "
        "e.subject, e.group_id, e.thread_id, e.body_chars, e.new_chars, "
        "length(e.quoted) AS quoted_chars, length(e.forwarded) AS forwarded_chars, "
        "length(e.signature) AS signature_chars, length(e.disclaimer) AS disclaimer_chars, "
        "COALESCE(g.email_type, 'unknown') AS email_type, g.size AS copies "
        "FROM emails e LEFT JOIN content_groups g ON g.id = e.group_id ORDER BY e.id"
    )


def overview(store: Store) -> dict[str, Any]:
    """Messages, distinct messages, threads, errors, duplicate rate and cleaning savings."""
    stats = store.stats()
    df = emails_frame(store)
    out: dict[str, Any] = {**stats, **duplicate_rate(store), **cleaning_savings(df)}
    dated = df.filter(pl.col("date").is_not_null())
    out["first_date"] = dated["date"].min() if dated.height else None
    out["last_date"] = dated["date"].max() if dated.height else None
    return out


def duplicate_rate(store: Store) -> dict[str, Any]:
    """How many stored messages are copies of another (one LLM call saved per copy)."""
    emails = int(store.scalar("SELECT COUNT(*) FROM emails") or 0)
    groups = int(
        store.scalar("SELECT COUNT(*) FROM content_groups WHERE canonical_email_id IS NOT NULL")
        or 0
    )
    dup = emails - groups
    return {
        "emails": emails,
        "distinct": groups,
        "duplicates": dup,
        "duplicate_rate": (dup / emails) if emails else 0.0,
    }


def cleaning_savings(df: pl.DataFrame) -> dict[str, Any]:
    """Characters of body text and how many cleaning moved out of the new text, by part."""
    if df.height == 0:
        return {"body_chars": 0, "new_chars": 0, "removed_share": 0.0}
    sums = df.select(
        pl.col(
            "body_chars",
            "new_chars",
            "quoted_chars",
            "forwarded_chars",
            "signature_chars",
            "disclaimer_chars",
        )
        .fill_null(0)
        .sum()
    ).row(0, named=True)
    body = int(sums["body_chars"])
    new = int(sums["new_chars"])
    return {
        **{k: int(v) for k, v in sums.items()},
        "removed_share": (1 - new / body) if body else 0.0,
    }


def latest_results(store: Store, run_id: int, n: int = 20) -> pl.DataFrame:
    """The run's newest results, one row per result with the email that stands for it."""
    df = store.query_df(
        "SELECT r.id AS result_id, r.status, r.latency_s, r.completion_tokens, r.emails, "
        "r.reason, r.data, r.created_at, COALESCE(r.email_id, g.canonical_email_id, "
        "(SELECT MIN(id) FROM emails WHERE thread_id = r.thread_id)) AS email_id "
        "FROM results r LEFT JOIN content_groups g ON g.id = r.group_id "
        "WHERE r.run_id = ? ORDER BY r.id DESC LIMIT ?",
        (run_id, n),
    )
    if df.height == 0:
        return df.with_columns(
            pl.lit(None, pl.Utf8).alias(c) for c in ("subject", "sender", "email_type", "priority")
        )
    ids = [int(i) for i in df["email_id"].drop_nulls()]
    marks = ",".join("?" * len(ids)) or "NULL"
    emails = store.query_df(
        f"SELECT id AS email_id, subject, sender FROM emails WHERE id IN ({marks})", ids
    )
    df = df.join(emails, on="email_id", how="left")

    def field(data: str | None, key: str) -> str | None:
        try:
            value = json.loads(data).get(key) if data else None
        except (ValueError, AttributeError):
            return None
        return None if value is None else str(value)

    return df.with_columns(
        pl.col("data")
        .map_elements(lambda d: field(d, "email_type"), return_dtype=pl.Utf8)
        .alias("email_type"),
        pl.col("data")
        .map_elements(lambda d: field(d, "priority"), return_dtype=pl.Utf8)
        .alias("priority"),
    ).sort("result_id", descending=True)


def result_detail(store: Store, result_id: int) -> dict[str, Any] | None:
    """One result with the email it stands for: headers, text and the result's JSON."""
    row = store.query_one(
        "SELECT r.*, COALESCE(r.email_id, g.canonical_email_id, "
        "(SELECT MIN(id) FROM emails WHERE thread_id = r.thread_id)) AS shown_email "
        "FROM results r LEFT JOIN content_groups g ON g.id = r.group_id WHERE r.id = ?",
        (result_id,),
    )
    if row is None:
        return None
    result = dict(row)
    email = store.query_one(
        "SELECT id, message_id, date, sender, sender_name, to_addrs, subject, folder, mailbox, "
        "new_text, body FROM emails WHERE id = ?",
        (result["shown_email"],),
    )
    try:
        data = json.loads(result["data"]) if result.get("data") else None
    except ValueError:
        data = None
    return {"result": result, "data": data, "email": dict(email) if email else {}}


# --- the priority queue --------------------------------------------------------------------
def pending_queue(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """Content groups without a result in ``run`` (all of them without a run), with their
    detected type, base priority and the email that stands for them."""
    detect_types(store)
    record = runs.get_run(store, run) if run is not None else None
    done = (
        ("AND NOT EXISTS (SELECT 1 FROM results r WHERE r.run_id = ? AND r.group_id = g.id)")
        if record is not None
        else ""
    )
    params: tuple[Any, ...] = (record.id,) if record is not None else ()
    return store.query_df(
        "SELECT g.id AS unit_id, COALESCE(g.email_type, 'other') AS email_type, "
        "COALESCE(g.priority, 0.3) AS base, g.size AS copies, e.subject, e.sender, e.date "
        "FROM content_groups g JOIN emails e ON e.id = g.canonical_email_id "
        f"WHERE g.canonical_email_id IS NOT NULL {done} ORDER BY g.id",
        params,
    )


def score_queue(queue: pl.DataFrame, weights: dict[str, float]) -> pl.DataFrame:
    """The queue scored with ``weights`` and ranked as the processor would (best first,
    ties by unit id); adds ``score`` and ``rank`` (1 = next)."""
    if queue.height == 0:
        return queue.with_columns(pl.lit(0.0).alias("score"), pl.lit(0, pl.UInt32).alias("rank"))
    scores = [
        priority_score(t, b, weights)
        for t, b in zip(queue["email_type"], queue["base"], strict=True)
    ]
    return (
        queue.with_columns(pl.Series("score", scores, dtype=pl.Float64))
        .sort(["score", "unit_id"], descending=[True, False])
        .with_row_index("rank", offset=1)
    )


def rank_moves(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """Per unit: rank before and after and ``moved`` (positive = moved up), biggest first."""
    if before.height == 0 or after.height == 0:
        return pl.DataFrame(
            schema={
                "unit_id": pl.Int64,
                "rank_before": pl.UInt32,
                "rank_after": pl.UInt32,
                "moved": pl.Int64,
            }
        )
    joined = after.select(
        "unit_id", "email_type", "subject", pl.col("rank").alias("rank_after")
    ).join(before.select("unit_id", pl.col("rank").alias("rank_before")), on="unit_id")
    return joined.with_columns(
        (pl.col("rank_before").cast(pl.Int64) - pl.col("rank_after").cast(pl.Int64)).alias("moved")
    ).sort(pl.col("moved").abs(), descending=True)


# --- figures -------------------------------------------------------------------------------
def _bar(
    x: list[Any], y: list[Any], title: str, xlabel: str, ylabel: str, *, horizontal: bool = False
) -> go.Figure:
    trace = go.Bar(x=y, y=x, orientation="h") if horizontal else go.Bar(x=x, y=y)
    fig = go.Figure(trace)
    fig.update_layout(
        title=title,
        height=360,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        xaxis_title=ylabel if horizontal else xlabel,
        yaxis_title=xlabel if horizontal else ylabel,
    )
    if horizontal:
        fig.update_yaxes(autorange="reversed")
    return fig


def volume_over_time(df: pl.DataFrame) -> go.Figure:
    """Emails per month (emails without a usable date are left out)."""
    per = df.filter(pl.col("month").is_not_null()).group_by("month").len().sort("month")
    return _bar(per["month"].to_list(), per["len"].to_list(), "Emails per month", "month", "emails")


def by_column(df: pl.DataFrame, column: str, top: int = 15, title: str | None = None) -> go.Figure:
    """The ``top`` values of ``column`` (folder, sender, mailbox) by emails."""
    per = df.group_by(column).len().sort(["len", column], descending=[True, False]).head(top)
    return _bar(
        [str(v) for v in per[column].to_list()],
        per["len"].to_list(),
        title or f"Emails by {column} (top {top})",
        column,
        "emails",
        horizontal=True,
    )


def by_folder(df: pl.DataFrame, top: int = 15) -> go.Figure:
    return by_column(df, "folder", top)


def by_sender(df: pl.DataFrame, top: int = 15) -> go.Figure:
    return by_column(df, "sender", top)


def type_counts(df: pl.DataFrame) -> go.Figure:
    """Emails by detected type (run ``detect_types`` first for types of a fresh ingest)."""
    return by_column(df, "email_type", len(TYPES) + 1, "Detected email types")


def thread_sizes(store: Store) -> go.Figure:
    """How many threads have 1, 2, 3... messages."""
    per = store.query_df(
        "SELECT size, COUNT(*) AS threads FROM threads GROUP BY size ORDER BY size"
    )
    return _bar(
        per["size"].to_list(),
        per["threads"].to_list(),
        "Thread sizes",
        "messages in the thread",
        "threads",
    )


def duplicates_figure(store: Store) -> go.Figure:
    """Content groups by number of copies (1 = no duplicate), with the duplicate rate."""
    per = store.query_df(
        "SELECT size AS copies, COUNT(*) AS groups FROM content_groups "
        "WHERE canonical_email_id IS NOT NULL GROUP BY size ORDER BY size"
    )
    rate = duplicate_rate(store)["duplicate_rate"]
    return _bar(
        per["copies"].to_list(),
        per["groups"].to_list(),
        f"Copies per distinct email (duplicate rate {rate:.0%})",
        "copies",
        "distinct emails",
    )


def cleaning_figure(df: pl.DataFrame) -> go.Figure:
    """Body characters split into the new text and what cleaning moved out of it."""
    s = cleaning_savings(df)
    parts = {
        "new text": s["new_chars"],
        "quoted": s.get("quoted_chars", 0),
        "forwarded": s.get("forwarded_chars", 0),
        "signature": s.get("signature_chars", 0),
        "disclaimer": s.get("disclaimer_chars", 0),
    }
    fig = _bar(
        list(parts),
        list(parts.values()),
        f"What cleaning removed ({s['removed_share']:.0%} of the body text)",
        "part",
        "characters",
    )
    return fig
