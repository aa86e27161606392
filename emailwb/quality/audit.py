"""Human audits: the audit queue, per-field correct/incorrect labels, accuracy with intervals.

The deep-check sample of every run (``scoring``: every ``sample_every``-th content key)
enters ``audit_queue``; ``add_to_queue`` adds others by hand. ``load_item`` gives one
queued result with its email (cleaned and raw), the extracted JSON, the grounding of each
extracted value and the judge's opinion; ``save_labels`` stores a person's per-field
labels and note in ``audits`` (one row per field; saving again replaces them);
``accuracy`` is the share of fields labelled correct, per field, with Wilson intervals, and
how often the judge agreed with the person. ``AuditPanel`` is the notebook front end
(``notebooks/04_audit.ipynb``); every piece of email content it shows is HTML-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
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


def _record(store: Store, run: str | int | None) -> runs.RunRecord:
    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(f"no run named {run!r}" if run is not None else "there is no run yet",
                              hint="process some emails first (`emailwb run`), then audit")
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


def queue_df(store: Store, run: str | int | None = None, *, pending_only: bool = False) -> pl.DataFrame:
    """The audit queue of a run: unit, why it is there, subject, judge score, labels so far."""
    record = _record(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    first = {"group": "(SELECT canonical_email_id FROM content_groups WHERE id = a.unit_id)",
             "thread": "(SELECT MIN(id) FROM emails WHERE thread_id = a.unit_id)",
             "email": "a.unit_id"}[record.unit]
    where = " AND labelled = 0" if pending_only else ""
    return store.query_df(
        f"SELECT * FROM (SELECT a.unit_id, a.reason, a.added_at, r.status, e.subject, e.sender, "
        f"j.overall AS judge_overall, j.status AS judge_status, "
        f"(SELECT COUNT(*) FROM audits u WHERE u.run_id = a.run_id AND u.unit_id = a.unit_id "
        f"AND u.label IS NOT NULL) AS labelled FROM audit_queue a "
        f"LEFT JOIN results r ON r.run_id = a.run_id AND r.{col} = a.unit_id "
        f"LEFT JOIN emails e ON e.id = {first} "
        f"LEFT JOIN judgements j ON j.run_id = a.run_id AND j.unit_id = a.unit_id "
        f"WHERE a.run_id = ?) WHERE 1 = 1{where} ORDER BY unit_id", (record.id,))


def add_to_queue(store: Store, run: str | int | None, unit_ids: Iterable[int],
                 reason: str = "manual") -> None:
    """Put units of a run into its audit queue (already queued ones stay as they are)."""
    record = _record(store, run)
    now = runs.now_iso()
    store.submit_many("INSERT OR IGNORE INTO audit_queue (run_id, unit_id, reason, added_at) "
                      "VALUES (?, ?, ?, ?)", [(record.id, int(u), reason, now) for u in unit_ids])
    store.flush()


def load_item(store: Store, run: str | int | None, unit_id: int) -> AuditItem:
    """One unit of a run with its email(s), JSON, grounding, judge verdict and labels."""
    from emailwb.quality.scoring import unit_texts

    record = _record(store, run)
    col = runs.UNIT_COLUMN[record.unit]
    res = store.query_one(f"SELECT status, data FROM results WHERE run_id = ? AND {col} = ?",
                          (record.id, unit_id))
    queued = store.query_one("SELECT reason FROM audit_queue WHERE run_id = ? AND unit_id = ?",
                             (record.id, unit_id))
    ids = runs.unit_email_ids(store, record.unit, [unit_id]).get(unit_id, [])
    emails = []
    if ids:
        rows = store.query(
            "SELECT id, message_id, date, sender, sender_name, to_addrs, subject, new_text, "
            f"forwarded, body FROM emails WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", ids)
        emails = [dict(r) for r in rows]
    data = json.loads(res["data"]) if res is not None and res["data"] else None
    ground = None
    if data is not None:
        text = unit_texts(store, record.unit, [unit_id]).get(unit_id)
        if text is not None:
            ground = grounding(data, text.full_text, sent=text.sent)
    j = store.query_one("SELECT status, verdict, overall, notes, error FROM judgements "
                        "WHERE run_id = ? AND unit_id = ?", (record.id, unit_id))
    judge = None
    if j is not None:
        judge = {"status": j["status"], "verdict": json.loads(j["verdict"]) if j["verdict"] else {},
                 "overall": j["overall"], "notes": j["notes"], "error": j["error"]}
    labels, note = {}, ""
    for r in store.query("SELECT field, label, note FROM audits WHERE run_id = ? AND unit_id = ?",
                         (record.id, unit_id)):
        if r["field"] == "*":
            note = r["note"]
        elif r["label"]:
            labels[r["field"]] = r["label"]
    return AuditItem(record.id, record.name, unit_id, queued["reason"] if queued else "manual",
                     res["status"] if res is not None else None, data, emails, ground, judge,
                     labels, note)


def save_labels(store: Store, run: str | int | None, unit_id: int,
                labels: Mapping[str, str | None], note: str = "", auditor: str = "") -> int:
    """Store per-field labels ("correct"/"incorrect"; None clears one) and a note; how many."""
    record = _record(store, run)
    bad = [f for f in labels if f not in AUDIT_FIELDS]
    if bad:
        raise ConfigError(f"unknown audit fields {bad}", hint=f"use {', '.join(AUDIT_FIELDS)}")
    wrong = {v for v in labels.values() if v is not None and v not in LABELS}
    if wrong:
        raise ConfigError(f"labels must be 'correct' or 'incorrect', not {sorted(wrong)}",
                          hint="pass None to clear a field's label")
    now = runs.now_iso()
    upsert = ("INSERT INTO audits (run_id, unit_id, field, label, note, auditor, created_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, unit_id, field) DO UPDATE SET "
              "label = excluded.label, note = excluded.note, auditor = excluded.auditor, "
              "created_at = excluded.created_at")
    rows: list[tuple[int, int, str, str | None, str, str, str]] = [
        (record.id, unit_id, f, v, "", auditor, now) for f, v in labels.items() if v]
    rows.append((record.id, unit_id, "*", None, note, auditor, now))
    cleared = [(record.id, unit_id, f) for f, v in labels.items() if v is None]
    if cleared:
        store.submit_many("DELETE FROM audits WHERE run_id = ? AND unit_id = ? AND field = ?",
                          cleared)
    store.submit_many(upsert, rows)
    store.flush()
    return len(rows) - 1


def labels_df(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """Every label of a run: unit, field, label, auditor, time, and the judge's verdict."""
    record = _record(store, run)
    rows = store.query(
        "SELECT u.unit_id, u.field, u.label, u.auditor, u.created_at, j.verdict FROM audits u "
        "LEFT JOIN judgements j ON j.run_id = u.run_id AND j.unit_id = u.unit_id "
        "AND j.status = 'done' WHERE u.run_id = ? AND u.label IS NOT NULL ORDER BY u.unit_id",
        (record.id,))
    out = [{"unit_id": r["unit_id"], "field": r["field"], "label": r["label"],
            "auditor": r["auditor"], "created_at": r["created_at"],
            "judge": (json.loads(r["verdict"]) if r["verdict"] else {}).get(r["field"])}
           for r in rows]
    return pl.DataFrame(out, schema={"unit_id": pl.Int64, "field": pl.Utf8, "label": pl.Utf8,
                                     "auditor": pl.Utf8, "created_at": pl.Utf8, "judge": pl.Utf8})


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
        rows.append({"field": f, "n": n, "correct": ok, "accuracy": ok / n if n else None,
                     "low": low if n else None, "high": high if n else None,
                     "judge_n": judged.height,
                     "judge_agrees": agree / judged.height if judged.height else None})
    return pl.DataFrame(rows, schema={"field": pl.Utf8, "n": pl.Int64, "correct": pl.Int64,
                                      "accuracy": pl.Float64, "low": pl.Float64,
                                      "high": pl.Float64, "judge_n": pl.Int64,
                                      "judge_agrees": pl.Float64})


# --- presentation ---------------------------------------------------------------------------
_PRE = ("white-space:pre-wrap;word-break:break-word;font-size:12px;background:#f7f7f7;"
        "padding:6px;max-height:360px;overflow:auto;margin:0")
_OK = "background:#dafbe1;border-radius:3px;padding:0 3px"
_BAD = "background:#ffd8d3;border-radius:3px;padding:0 3px;text-decoration:underline wavy #cf222e"


def _value_html(item: Any) -> str:
    if isinstance(item, Mapping):
        return escape(", ".join(f"{k}: {v}" for k, v in item.items() if v not in ("", None)))
    return escape(str(item))


def json_html(data: Mapping[str, Any] | None, ground: Grounding | None = None) -> str:
    """The extracted JSON, each checked value marked grounded (green) or not (red, class
    ``emailwb-ungrounded``); every value escaped."""
    if data is None:
        return "<i>no extracted JSON (the unit failed)</i>"
    lines = []
    for key, value in data.items():
        fg = ground.fields.get(key) if ground is not None else None
        if isinstance(value, list) and fg is not None:
            parts = []
            for i, item in enumerate(value):
                bad = i in fg.ungrounded_index
                parts.append(f"<span class='emailwb-{'ungrounded' if bad else 'grounded'}' "
                             f"style='{_BAD if bad else _OK}'>{_value_html(item)}</span>")
            shown = ", ".join(parts) or "[]"
        elif isinstance(value, (list, dict)):
            shown = escape(json.dumps(value, ensure_ascii=False))
        else:
            shown = escape(str(value))
        lines.append(f"<div><b>{escape(str(key))}</b>: {shown}</div>")
    return f"<div class='emailwb-json' style='font-size:12px'>{''.join(lines)}</div>"


def email_html(emails: list[dict[str, Any]]) -> str:
    """Each email's headers, cleaned text and (folded) raw body, escaped."""
    out = []
    for e in emails:
        try:
            to = ", ".join(json.loads(e.get("to_addrs") or "[]"))
        except ValueError:
            to = str(e.get("to_addrs") or "")
        heads = "".join(f"<div><b>{k}:</b> {escape(str(v or ''))}</div>" for k, v in (
            ("From", f"{e.get('sender_name') or ''} <{e.get('sender') or ''}>"), ("To", to),
            ("Date", e.get("date")), ("Subject", e.get("subject"))))
        cleaned = "\n".join(x for x in (e.get("new_text") or "", e.get("forwarded") or "") if x)
        out.append(f"<div class='emailwb-email'>{heads}<div><b>cleaned</b></div>"
                   f"<pre style='{_PRE}'>{escape(cleaned)}</pre><details><summary>raw body"
                   f"</summary><pre style='{_PRE}'>{escape(e.get('body') or '')}</pre></details>"
                   f"</div>")
    return "".join(out) or "<i>the unit's emails are gone from the store</i>"


def accuracy_html(df: pl.DataFrame) -> str:
    """The accuracy table as HTML."""
    def f(v: Any, d: int = 2) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    rows = "".join(f"<tr><td>{escape(r['field'])}</td><td>{r['n']}</td><td>{r['correct']}</td>"
                   f"<td>{f(r['accuracy'])}</td><td>[{f(r['low'])}, {f(r['high'])}]</td>"
                   f"<td>{f(r['judge_agrees'])} (n={r['judge_n']})</td></tr>"
                   for r in df.iter_rows(named=True))
    return ("<table class='emailwb-accuracy'><thead><tr><th>field</th><th>labelled</th>"
            "<th>correct</th><th>accuracy</th><th>95% Wilson</th><th>judge agrees</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def accuracy_figure(df: pl.DataFrame, title: str = "Audited accuracy per field") -> Any:
    """Plotly bars: accuracy per labelled field with its Wilson interval."""
    import plotly.graph_objects as go

    d = df.filter(pl.col("n") > 0)
    acc, low, high = d["accuracy"].to_list(), d["low"].to_list(), d["high"].to_list()
    fig = go.Figure(go.Bar(
        x=d["field"].to_list(), y=acc, text=[f"n={n}" for n in d["n"].to_list()],
        error_y={"type": "data", "symmetric": False,
                 "array": [h - a for a, h in zip(acc, high, strict=True)],
                 "arrayminus": [a - lo for a, lo in zip(acc, low, strict=True)]}))
    fig.update_layout(title=title, yaxis={"range": [0, 1.05], "title": "share correct"},
                      height=360, margin={"t": 50, "b": 40})
    return fig


class AuditPanel:
    """Walk a run's audit queue: email, JSON with grounding marks, per-field labels, a note.

    A plain object around ipywidgets: ``show(i)``, ``set_label(field, label)``, ``save()``
    (stores and moves on), ``next()``/``prev()``; tests drive these directly. Callback
    errors land in ``errors`` (an Output widget) instead of vanishing.
    """

    def __init__(self, store: Store, run: str | int | None = None, *, auditor: str = "",
                 pending_only: bool = False) -> None:
        import ipywidgets as w

        self.store = store
        self.record = _record(store, run)
        self.auditor = auditor
        self.units = queue_df(store, self.record.id, pending_only=pending_only)["unit_id"].to_list()
        self.index = 0
        self.item: AuditItem | None = None
        self.header = w.HTML()
        self.email = w.HTML()
        self.json = w.HTML()
        self.toggles = {f: w.ToggleButtons(options=[("–", ""), ("correct", "correct"),
                                                    ("incorrect", "incorrect")], value="",
                                           description=f, style={"button_width": "80px"})
                        for f in AUDIT_FIELDS}
        self.note = w.Textarea(placeholder="note (optional)", layout=w.Layout(width="100%"))
        self.prev_button = w.Button(description="◀ previous")
        self.next_button = w.Button(description="next ▶")
        self.save_button = w.Button(description="save and next", button_style="success")
        self.accuracy = w.HTML()
        self.errors = w.Output()
        self.prev_button.on_click(self._guard(lambda _b: self.prev()))
        self.next_button.on_click(self._guard(lambda _b: self.next()))
        self.save_button.on_click(self._guard(lambda _b: self.save()))
        self.widget = w.VBox([
            self.header,
            w.HBox([w.VBox([self.email], layout=w.Layout(width="55%")),
                    w.VBox([self.json, *self.toggles.values(), self.note],
                           layout=w.Layout(width="45%"))]),
            w.HBox([self.prev_button, self.next_button, self.save_button]),
            self.accuracy, self.errors])
        self.refresh_accuracy()
        if self.units:
            self.show(0)
        else:
            self.header.value = (f"<b>the audit queue of {escape(self.record.name)} is empty</b>"
                                 ": deep checks sample every Nth email as a run goes")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _guard(self, fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:
                self.errors.append_stderr(f"audit: {type(exc).__name__}: {exc}\n")
                return None
        return wrapper

    def show(self, index: int) -> AuditItem:
        """Load and show the queue's ``index``-th unit with its saved labels."""
        if not self.units:
            raise ProcessingError("the audit queue is empty",
                                  hint="run with a smaller sample_every, or add_to_queue(...)")
        self.index = max(0, min(index, len(self.units) - 1))
        item = load_item(self.store, self.record.id, self.units[self.index])
        self.item = item
        judge = item.judge or {}
        self.header.value = (
            f"<b>{escape(self.record.name)}</b>: item {self.index + 1} of {len(self.units)}, "
            f"unit {item.unit_id} ({escape(item.reason)}), result {escape(str(item.status))}; "
            f"judge: {escape(str(judge.get('overall', '–')))}/5 {escape(judge.get('notes') or '')}")
        self.email.value = email_html(item.emails)
        self.json.value = json_html(item.data, item.grounding)
        verdict = judge.get("verdict") or {}
        for f, t in self.toggles.items():
            t.value = item.labels.get(f, "")
            t.tooltip = f"judge: {verdict.get(f, 'not judged')}"
        self.note.value = item.note
        return item

    def set_label(self, field_name: str, label: str | None) -> None:
        """Set one field's toggle ("correct", "incorrect", or None to clear)."""
        if field_name not in self.toggles:
            raise ConfigError(f"unknown field {field_name!r}", hint=f"use {', '.join(AUDIT_FIELDS)}")
        self.toggles[field_name].value = label or ""

    def save(self) -> int:
        """Store the current labels and note, update the accuracy table, show the next item."""
        if self.item is None:
            raise ProcessingError("nothing to save: the queue is empty",
                                  hint="run with a smaller sample_every, or add_to_queue(...)")
        labels = {f: (t.value or None) for f, t in self.toggles.items()}
        n = save_labels(self.store, self.record.id, self.item.unit_id, labels, self.note.value,
                        self.auditor)
        self.refresh_accuracy()
        if self.index + 1 < len(self.units):
            self.show(self.index + 1)
        return n

    def next(self) -> AuditItem:
        return self.show(self.index + 1)

    def prev(self) -> AuditItem:
        return self.show(self.index - 1)

    def refresh_accuracy(self) -> pl.DataFrame:
        df = accuracy(self.store, self.record.id)
        self.accuracy.value = "<h4>Accuracy so far</h4>" + accuracy_html(df)
        return df
