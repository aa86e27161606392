"""The audit panel: walk a run's audit queue with the email beside its extraction.

HTML views (the email, the JSON with grounding marks, the accuracy table and figure) and
``AuditPanel``, a plain object around ipywidgets that tests drive; the labels it saves go to
``emailwb.quality.audit``. Email content is untrusted: everything shown is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import ConfigError, ProcessingError
from emailwb.quality.audit import (
    AUDIT_FIELDS,
    AuditItem,
    accuracy,
    audit_run,
    load_item,
    queue_df,
    save_labels,
)
from emailwb.quality.grounding import Grounding
from emailwb.ui.evidence import highlight_html

if TYPE_CHECKING:
    from emailwb.store.database import Store

_PRE = (
    "white-space:pre-wrap;word-break:break-word;font-size:12px;background:#f7f7f7;"
    "padding:6px;max-height:360px;overflow:auto;margin:0"
)
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
                parts.append(
                    f"<span class='emailwb-{'ungrounded' if bad else 'grounded'}' "
                    f"style='{_BAD if bad else _OK}'>{_value_html(item)}</span>"
                )
            shown = ", ".join(parts) or "[]"
        elif isinstance(value, (list, dict)):
            shown = escape(json.dumps(value, ensure_ascii=False))
        else:
            shown = escape(str(value))
        lines.append(f"<div><b>{escape(str(key))}</b>: {shown}</div>")
    return f"<div class='emailwb-json' style='font-size:12px'>{''.join(lines)}</div>"


def email_html(emails: list[dict[str, Any]], evidence: Mapping[str, Any] | None = None) -> str:
    """Each email's headers, cleaned text and (folded) raw body, escaped. With the result's
    ``evidence``, the first email's body (the text its spans point into) follows with each
    extracted value highlighted and the values without a span listed as unsupported."""
    out = []
    for n, e in enumerate(emails):
        try:
            to = ", ".join(json.loads(e.get("to_addrs") or "[]"))
        except ValueError:
            to = str(e.get("to_addrs") or "")
        heads = "".join(
            f"<div><b>{k}:</b> {escape(str(v or ''))}</div>"
            for k, v in (
                ("From", f"{e.get('sender_name') or ''} <{e.get('sender') or ''}>"),
                ("To", to),
                ("Date", e.get("date")),
                ("Subject", e.get("subject")),
            )
        )
        cleaned = "\n".join(x for x in (e.get("new_text") or "", e.get("forwarded") or "") if x)
        marked = ""
        if evidence and n == 0:
            body = (e.get("body") or "").replace("\r\n", "\n")
            marked = (
                "<div><b>evidence</b></div>"
                f"<div class='emailwb-evidence'>{highlight_html(body, evidence)}</div>"
            )
        out.append(
            f"<div class='emailwb-email'>{heads}{marked}<div><b>cleaned</b></div>"
            f"<pre style='{_PRE}'>{escape(cleaned)}</pre><details><summary>raw body"
            f"</summary><pre style='{_PRE}'>{escape(e.get('body') or '')}</pre></details>"
            f"</div>"
        )
    return "".join(out) or "<i>the unit's emails are gone from the store</i>"


def accuracy_html(df: pl.DataFrame) -> str:
    """The accuracy table as HTML."""

    def f(v: Any, d: int = 2) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    rows = "".join(
        f"<tr><td>{escape(r['field'])}</td><td>{r['n']}</td><td>{r['correct']}</td>"
        f"<td>{f(r['accuracy'])}</td><td>[{f(r['low'])}, {f(r['high'])}]</td>"
        f"<td>{f(r['judge_agrees'])} (n={r['judge_n']})</td></tr>"
        for r in df.iter_rows(named=True)
    )
    return (
        "<table class='emailwb-accuracy'><thead><tr><th>field</th><th>labelled</th>"
        "<th>correct</th><th>accuracy</th><th>95% Wilson</th><th>judge agrees</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def accuracy_figure(df: pl.DataFrame, title: str = "Audited accuracy per field") -> Any:
    """Plotly bars: accuracy per labelled field with its Wilson interval."""
    import plotly.graph_objects as go

    d = df.filter(pl.col("n") > 0)
    acc, low, high = d["accuracy"].to_list(), d["low"].to_list(), d["high"].to_list()
    fig = go.Figure(
        go.Bar(
            x=d["field"].to_list(),
            y=acc,
            text=[f"n={n}" for n in d["n"].to_list()],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [h - a for a, h in zip(acc, high, strict=True)],
                "arrayminus": [a - lo for a, lo in zip(acc, low, strict=True)],
            },
        )
    )
    fig.update_layout(
        title=title,
        yaxis={"range": [0, 1.05], "title": "share correct"},
        height=360,
        margin={"t": 50, "b": 40},
    )
    return fig


class AuditPanel:
    """Walk a run's audit queue: email, JSON with grounding marks, per-field labels, a note.

    A plain object around ipywidgets: ``show(i)``, ``set_label(field, label)``, ``save()``
    (stores and moves on), ``next()``/``prev()``; tests drive these directly. Callback
    errors land in ``errors`` (an Output widget) instead of vanishing.
    """

    def __init__(
        self,
        store: Store,
        run: str | int | None = None,
        *,
        auditor: str = "",
        pending_only: bool = False,
    ) -> None:
        import ipywidgets as w

        self.store = store
        self.record = audit_run(store, run)
        self.auditor = auditor
        self.units = queue_df(store, self.record.id, pending_only=pending_only)["unit_id"].to_list()
        self.index = 0
        self.item: AuditItem | None = None
        self.header = w.HTML()
        self.email = w.HTML()
        self.json = w.HTML()
        self.toggles = {
            f: w.ToggleButtons(
                options=[("–", ""), ("correct", "correct"), ("incorrect", "incorrect")],
                value="",
                description=f,
                style={"button_width": "80px"},
            )
            for f in AUDIT_FIELDS
        }
        self.note = w.Textarea(placeholder="note (optional)", layout=w.Layout(width="100%"))
        self.prev_button = w.Button(description="◀ previous")
        self.next_button = w.Button(description="next ▶")
        self.save_button = w.Button(description="save and next", button_style="success")
        self.accuracy = w.HTML()
        self.errors = w.Output()
        self.prev_button.on_click(self._guard(lambda _b: self.prev()))
        self.next_button.on_click(self._guard(lambda _b: self.next()))
        self.save_button.on_click(self._guard(lambda _b: self.save()))
        self.widget = w.VBox(
            [
                self.header,
                w.HBox(
                    [
                        w.VBox([self.email], layout=w.Layout(width="55%")),
                        w.VBox(
                            [self.json, *self.toggles.values(), self.note],
                            layout=w.Layout(width="45%"),
                        ),
                    ]
                ),
                w.HBox([self.prev_button, self.next_button, self.save_button]),
                self.accuracy,
                self.errors,
            ]
        )
        self.refresh_accuracy()
        if self.units:
            self.show(0)
        else:
            self.header.value = (
                f"<b>the audit queue of {escape(self.record.name)} is empty</b>"
                ": deep checks sample every Nth email as a run goes"
            )

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
            raise ProcessingError(
                "the audit queue is empty",
                hint="run with a smaller sample_every, or add_to_queue(...)",
            )
        self.index = max(0, min(index, len(self.units) - 1))
        item = load_item(self.store, self.record.id, self.units[self.index])
        self.item = item
        judge = item.judge or {}
        self.header.value = (
            f"<b>{escape(self.record.name)}</b>: item {self.index + 1} of {len(self.units)}, "
            f"unit {item.unit_id} ({escape(item.reason)}), result {escape(str(item.status))}; "
            f"judge: {escape(str(judge.get('overall', '–')))}/5 {escape(judge.get('notes') or '')}"
        )
        self.email.value = email_html(item.emails, (item.data or {}).get("evidence"))
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
            raise ConfigError(
                f"unknown field {field_name!r}", hint=f"use {', '.join(AUDIT_FIELDS)}"
            )
        self.toggles[field_name].value = label or ""

    def save(self) -> int:
        """Store the current labels and note, update the accuracy table, show the next item."""
        if self.item is None:
            raise ProcessingError(
                "nothing to save: the queue is empty",
                hint="run with a smaller sample_every, or add_to_queue(...)",
            )
        labels = {f: (t.value or None) for f, t in self.toggles.items()}
        n = save_labels(
            self.store, self.record.id, self.item.unit_id, labels, self.note.value, self.auditor
        )
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
