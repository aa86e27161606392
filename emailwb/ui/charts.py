"""What the panels draw: live plotly ``FigureWidget`` charts and escaped HTML views.

Job: ``LiveCharts`` turns the processor's ``MetricsSnapshot`` stream into three live
plots in one FigureWidget (throughput: emails/min and tokens/s; latency: p50/p95 of
latency and time to first token; load: requests in flight, the concurrency limit, failures
and the error rate), appending one point per ``update`` inside a ``batch_update`` so the
browser gets one message and redraws once. ``PriorityCharts`` shows a
scored queue's priority distribution by type and which emails moved up or down. The HTML
helpers (``counters_html``, ``table_html``, ``email_html``, ``json_html``) and the
``ResultsBrowser`` (newest results; a row opens the email beside its JSON) show text that
comes from emails or from the model about them, so every value goes through
``html.escape``: a ``<script>`` in a body shows as text.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

import ipywidgets as w
import plotly.graph_objects as go
import polars as pl

from emailwb.engine.throughput import MetricsSnapshot
from emailwb.store.database import Store
from emailwb.ui import explore
from emailwb.ui.evidence import highlight_html
from emailwb.ui.notebook import ErrorLog, escape

MAX_POINTS = 900  # a quarter of an hour at one point a second
SYNC_EVERY = 10  # updates between full copies of the live data into the widget state
_MARGIN = {"l": 50, "r": 20, "t": 40, "b": 35}

#: (chart, trace name, snapshot field, secondary y axis)
SERIES: list[tuple[str, str, str, bool]] = [
    ("throughput", "emails/min", "emails_per_min", False),
    ("throughput", "tokens/s", "tokens_per_s", True),
    ("latency", "latency p50", "latency_p50", False),
    ("latency", "latency p95", "latency_p95", False),
    ("latency", "TTFT p50", "ttft_p50", False),
    ("latency", "TTFT p95", "ttft_p95", False),
    ("load", "in flight", "in_flight", False),
    ("load", "limit", "limit", False),
    ("load", "failed", "failed", False),
    ("load", "failed attempts %", "attempt_error_rate", True),
]
CHARTS = ["throughput", "latency", "load"]
TITLES = {
    "throughput": "Throughput: emails/min (left), tokens/s (right)",
    "latency": "Latency and time to first token (s)",
    "load": "Requests in flight, concurrency limit, failed units; error rate % (right)",
}
DASH = {"latency p95": "dot", "TTFT p95": "dot", "tokens/s": "dot", "error rate %": "dot"}


def sync_state(fig: go.FigureWidget) -> None:
    """Copy the figure's traces into the state a browser view starts from.

    plotly updates ``_widget_data`` only at construction (and when a FigureWidget is
    displayed on its own): a view created later (Voila's page load, a page reload, the panel
    shown again) would start from the figure as it was built, without the updates sent
    before it existed. Live views are unaffected (``do_data`` is a no-op in the browser).
    """
    fig._widget_data = deepcopy(fig._data)


def _widget(fig: go.Figure) -> go.FigureWidget:
    """A FigureWidget built from a complete figure.

    Traces are given at construction because plotly syncs a FigureWidget's initial traces
    to the browser only then (or when it is displayed on its own, not inside a box). And
    each panel uses ONE FigureWidget: with plotly 7.1 + anywidget 0.11 (Voila 0.5, Chromium),
    when a kernel holds several plotly FigureWidgets, the browser drops the updates of some
    of them at random (seen in tests/test_browser.py's development); with one it never did.
    """
    return go.FigureWidget(fig)


class LiveCharts:
    """Live charts in one FigureWidget (three stacked plots), one point per ``update``.

    ``widget=False`` keeps the series without a FigureWidget (``figure`` is None): for a
    page that shows another plotly FigureWidget, see ``_widget``.
    """

    def __init__(self, max_points: int = MAX_POINTS, *, widget: bool = True) -> None:
        self._x: deque[float] = deque(maxlen=max_points)
        self._y: dict[str, deque[float | None]] = {
            f: deque(maxlen=max_points) for _, _, f, _ in SERIES
        }
        self.offset = 0.0  # seconds of earlier sessions, so a restart continues the x axis
        self._last_t: float | None = None
        self._trace: dict[str, int] = {}
        self.figure: go.FigureWidget | None = self._build() if widget else None

    def _build(self) -> go.FigureWidget:
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=3,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.09,
            subplot_titles=[TITLES[c] for c in CHARTS],
            specs=[[{"secondary_y": True}], [{}], [{"secondary_y": True}]],
        )
        for chart, label, fld, secondary in SERIES:
            row = CHARTS.index(chart) + 1
            fig.add_trace(
                go.Scatter(
                    x=[],
                    y=[],
                    name=label,
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"dash": DASH.get(label, "solid")},
                    legendgroup=chart,
                ),
                row=row,
                col=1,
                secondary_y=secondary if row != 2 else None,
            )
            self._trace[fld] = len(fig.data) - 1
        fig.update_layout(
            height=620,
            margin=_MARGIN,
            template="plotly_white",
            legend={"orientation": "v", "x": 1.06, "y": 1},
        )
        fig.update_xaxes(title_text="seconds", row=3, col=1)
        fig.update_yaxes(rangemode="tozero")
        for ann in fig.layout.annotations:
            ann.font = {"size": 12}
        return _widget(fig)

    @property
    def points(self) -> int:
        """Points drawn per series so far."""
        return len(self._x)

    def series(self, field: str) -> list[float | None]:
        return list(self._y[field])

    def new_session(self) -> None:
        """A new run session starts at t = 0: keep the x axis going from where it stopped."""
        if self._x:
            self.offset = self._x[-1] + 1.0
        self._last_t = None

    def update(self, snap: MetricsSnapshot) -> bool:
        """Append the snapshot as one point of every series; False when it is not newer."""
        if self._last_t is not None and snap.t <= self._last_t:
            return False
        self._last_t = snap.t
        self._x.append(round(self.offset + snap.t, 2))
        for _, _, fld, _ in SERIES:
            value = getattr(snap, fld)
            if fld == "attempt_error_rate" and value is not None:
                value = value * 100
            self._y[fld].append(value)
        if self.figure is None:
            return True
        xs = list(self._x)
        with self.figure.batch_update():  # one message to the browser per update
            for _, _, fld, _ in SERIES:
                trace = self.figure.data[self._trace[fld]]
                trace.x = xs
                trace.y = list(self._y[fld])
        if len(self._x) % SYNC_EVERY == 1:
            sync_state(self.figure)
        return True

    def sync(self) -> None:
        """Make a view created from now on start with every point (``sync_state``)."""
        if self.figure is not None:
            sync_state(self.figure)

    def clear(self) -> None:
        self._x.clear()
        for values in self._y.values():
            values.clear()
        self.offset, self._last_t = 0.0, None
        if self.figure is not None:
            with self.figure.batch_update():
                for trace in self.figure.data:
                    trace.x, trace.y = [], []
            sync_state(self.figure)


class PriorityCharts:
    """One FigureWidget: the queue's priority by type (boxes) and the biggest rank moves."""

    def __init__(self) -> None:
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.5, 0.5],
            horizontal_spacing=0.22,
            subplot_titles=[
                "Priority score by email type (pending queue)",
                "Moved up (+) or down (-) in the queue",
            ],
        )
        fig.add_trace(
            go.Box(x=[], y=[], boxpoints="all", jitter=0.4, pointpos=0, name="score"), row=1, col=1
        )
        fig.add_trace(go.Bar(x=[], y=[], orientation="h", name="places"), row=1, col=2)
        fig.update_layout(
            height=340, margin={**_MARGIN, "l": 40}, template="plotly_white", showlegend=False
        )
        fig.update_yaxes(title_text="score", row=1, col=1)
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        fig.update_xaxes(title_text="places", row=1, col=2)
        for ann in fig.layout.annotations:
            ann.font = {"size": 12}
        self.figure = _widget(fig)

    @property
    def distribution(self) -> Any:
        """The box trace (score per type)."""
        return self.figure.data[0]

    @property
    def moves(self) -> Any:
        """The bar trace (places moved per email)."""
        return self.figure.data[1]

    def update(self, scored: pl.DataFrame, moves: pl.DataFrame, top: int = 15) -> None:
        moved = moves.filter(pl.col("moved") != 0).head(top) if moves.height else moves
        with self.figure.batch_update():
            box, bar = self.figure.data
            box.x = scored["email_type"].to_list() if scored.height else []
            box.y = scored["score"].to_list() if scored.height else []
            if moved.height:
                bar.y = [
                    f"#{u} {_short(s, 26)} ({t})"
                    for u, s, t in zip(
                        moved["unit_id"], moved["subject"], moved["email_type"], strict=True
                    )
                ]
                bar.x = moved["moved"].to_list()
                bar.marker = {"color": ["#2a9d8f" if m > 0 else "#e76f51" for m in moved["moved"]]}
            else:
                bar.x, bar.y = [], []
        sync_state(self.figure)  # small, and often updated before the panel is shown


def _short(text: Any, n: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


# --- escaped HTML ------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def counters_html(snap: MetricsSnapshot | None, state: str, run_name: str = "") -> str:
    """The counters line: state, done/total, failed, pending, in flight, rates and ETA."""
    if snap is None:
        cells = [("state", state), ("run", run_name or "–")]
        done = 0
    else:
        done = snap.done
        cells = [
            ("state", state),
            ("run", run_name or "–"),
            ("done", f"{snap.done:,} / {snap.total:,}"),
            ("failed", _fmt(snap.failed)),
            ("pending", _fmt(snap.pending)),
            ("emails done", _fmt(snap.emails_done)),
            ("in flight", f"{snap.in_flight} (limit {snap.limit})"),
            ("emails/min", _fmt(snap.emails_per_min)),
            ("tokens/s", _fmt(snap.tokens_per_s)),
            ("ETA", eta_text(snap.eta_s)),
        ]
    body = "".join(
        f"<div style='margin-right:18px'><div style='color:#666;font-size:11px'>"
        f"{escape(k)}</div><div class='emailwb-counter-{escape(k.replace(' ', '-'))}'"
        f" style='font-size:16px;font-weight:600'>{escape(v)}</div></div>"
        for k, v in cells
    )
    return (
        f"<div class='emailwb-counters-inner' data-done='{done}' "
        f"style='display:flex;flex-wrap:wrap'>{body}</div>"
    )


def quality_html(status: dict[str, Any] | None) -> str:
    """The quality line of the launch panel: deep checks, and any drift alert with what the
    run did about it (paused, or rolled back to the baseline configuration)."""
    if not status:
        return ""
    phase = status.get("phase") or "main"
    share = status.get("grounding")
    grounded = (
        f" · grounding {share:.0%} of extracted strings in the emails" if share is not None else ""
    )
    line = (
        f"quality: {_fmt(status.get('scored', 0))} results scored{grounded} · deep checks "
        f"{_fmt(status.get('sampled', 0))} sampled, {_fmt(status.get('judged', 0))} judged"
        f" · on drift: {status.get('on_drift', 'alert')} · phase: {phase}"
    )
    alerts = list(status.get("alerts") or [])
    warning = status.get("grounding_warning")
    banner = (
        (
            "<div class='emailwb-grounding-warning' style='border:1px solid #b9770e;"
            "background:#fef5e7;color:#7e5109;padding:6px 10px;margin:4px 0;font-size:13px'>"
            f"<b>Most of what this run extracts is not in the emails.</b> {escape(warning)}"
            "</div>"
        )
        if warning
        else ""
    )
    if not alerts:
        return (
            f"{banner}<div class='emailwb-quality' data-alerts='0' style='color:#555;"
            f"font-size:12px'>{escape(line)}</div>"
        )
    if status.get("paused_by_drift"):
        action = (
            "the run is paused by the drift alarm: look at the latest results (and the "
            "audit queue), then Resume to go on or Stop"
        )
    elif phase == "baseline":
        action = (
            "rolled back: the following emails run under the baseline configuration "
            "(results record phase 'baseline')"
        )
    else:
        action = "alert only (on_drift='alert'): the run goes on unchanged"
    items = "".join(f"<li>{escape(str(a))}</li>" for a in alerts[-5:])
    more = f"<div>({len(alerts) - 5} earlier alerts)</div>" if len(alerts) > 5 else ""
    return (
        f"{banner}<div class='emailwb-quality emailwb-drift-alert' data-alerts='{len(alerts)}' "
        "style='border:1px solid #c0392b;background:#fdecea;color:#7b241c;padding:6px 10px;"
        "margin:4px 0;font-size:13px'><b>Quality drift alert</b>"
        f"<ul style='margin:4px 0 4px 18px;padding:0'>{items}</ul>{more}"
        f"<div><b>{escape(action)}</b></div>"
        f"<div style='color:#555;font-size:12px'>{escape(line)}</div></div>"
    )


def table_html(
    df: pl.DataFrame, columns: list[str] | None = None, *, max_chars: int = 60, caption: str = ""
) -> str:
    """A polars frame as an HTML table with every cell escaped."""
    cols = columns or df.columns
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(c)}</th>" for c in cols)
    rows = []
    for row in df.select(cols).iter_rows():
        cells = "".join(
            f"<td style='padding:2px 8px'>{escape(_short(_fmt(v, 2), max_chars))}</td>" for v in row
        )
        rows.append(f"<tr>{cells}</tr>")
    cap = f"<caption style='text-align:left'>{escape(caption)}</caption>" if caption else ""
    return (
        f"<table style='border-collapse:collapse;font-size:12px'>{cap}<thead><tr>{head}"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_PRE = (
    "white-space:pre-wrap;word-break:break-word;font-size:12px;line-height:1.35;"
    "max-height:420px;"
    "overflow:auto;background:#f7f7f7;padding:8px;margin:0"
)


def email_html(email: dict[str, Any], evidence: Mapping[str, Any] | None = None) -> str:
    """An email's headers and text, escaped (untrusted content). With a result's
    ``evidence``, the whole body with each extracted value's span highlighted
    (``emailwb.ui.evidence``) and the values without one listed as unsupported."""
    if not email:
        return "<i>no email</i>"
    heads = [
        ("From", f"{email.get('sender_name') or ''} <{email.get('sender') or ''}>".strip()),
        ("To", ", ".join(_list(email.get("to_addrs")))),
        ("Date", email.get("date")),
        ("Subject", email.get("subject")),
        ("Folder", email.get("folder")),
        ("Message-ID", email.get("message_id")),
    ]
    text = email.get("new_text") or ""
    if len(text.strip()) < 20:
        text = email.get("body") or text
    header = "".join(f"<div><b>{escape(k)}:</b> {escape(v)}</div>" for k, v in heads)
    if evidence:
        body = (email.get("body") or "").replace("\r\n", "\n")
        return (
            f"<div class='emailwb-email' style='font-size:12px'>{header}"
            f"<div class='emailwb-email-body'>{highlight_html(body, evidence)}</div></div>"
        )
    return (
        f"<div class='emailwb-email' style='font-size:12px'>{header}"
        f"<pre class='emailwb-email-body' style='{_PRE}'>{escape(text)}</pre></div>"
    )


def json_html(data: Any, result: dict[str, Any] | None = None) -> str:
    """A result's JSON (or its failure reason and raw reply), escaped."""
    result = result or {}
    if data is None:
        text = (
            f"status: {result.get('status')}\nerror: {result.get('error')}\n"
            f"reason: {result.get('reason')}\n\nraw reply:\n{result.get('raw') or ''}"
        )
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    meta = (
        f"status {result.get('status')} · model {result.get('model')} · latency "
        f"{_fmt(result.get('latency_s'), 2)} s · attempts {result.get('attempts')}"
    )
    return (
        f"<div style='font-size:12px'><div>{escape(meta)}</div>"
        f"<pre class='emailwb-result-json' style='{_PRE}'>{escape(text)}</pre></div>"
    )


def _list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        got = json.loads(value) if value else []
    except (TypeError, ValueError):
        return [str(value)]
    return [str(v) for v in got] if isinstance(got, list) else [str(got)]


# --- the results browser ----------------------------------------------------------------------
class ResultsBrowser:
    """The newest results of a run in a list; picking a row shows the email (escaped) beside
    its JSON (escaped). ``widget`` is what a notebook shows."""

    def __init__(self, store: Store, *, rows: int = 20, errors: ErrorLog | None = None) -> None:
        self.store, self.rows = store, rows
        self.errors = errors or ErrorLog()
        self.run_id: int | None = None
        self.frame: pl.DataFrame = pl.DataFrame()
        head = self._line("result", "status", "type", "priority", "latency", "subject")
        self.header = w.HTML(f"<pre style='margin:0;font-size:11px'>{escape(head)}</pre>")
        self.table = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.table.add_class("emailwb-results")
        self.email = w.HTML("<i>pick a result above</i>", layout=w.Layout(width="50%"))
        self.json = w.HTML("", layout=w.Layout(width="50%"))
        self.shown: int | None = None
        self._options: list[tuple[str, int]] = []
        self._updating = False
        self.table.observe(self.errors.capture(self._on_select), names="value")
        self.widget = w.VBox(
            [
                w.HTML("<b>Latest results</b> (pick one to open it)"),
                self.header,
                self.table,
                w.HBox([self.email, self.json]),
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @staticmethod
    def _line(*cols: Any) -> str:
        widths = (8, 7, 14, 9, 8)
        out = [f"{str(c)[: n - 1]:<{n}}" for c, n in zip(cols, widths, strict=False)]
        return " ".join(out) + " " + str(cols[-1])[:90]

    def _label(self, row: dict[str, Any]) -> str:
        lat = f"{row['latency_s']:.2f}s" if row.get("latency_s") is not None else "–"
        return self._line(
            f"#{row['result_id']}",
            row["status"],
            row.get("email_type") or "–",
            row.get("priority") or "–",
            lat,
            (row.get("subject") or "").replace("\n", " "),
        )

    def refresh(self, run_id: int | None = None) -> None:
        """Reload the newest results (blocking read; ``arefresh`` on the loop)."""
        self._show(self._load(run_id))

    async def arefresh(self, run_id: int | None = None) -> None:
        self._show(await asyncio.to_thread(self._load, run_id))

    def _load(self, run_id: int | None) -> pl.DataFrame:
        if run_id is not None:
            self.run_id = run_id
        if self.run_id is None:
            return pl.DataFrame()
        return explore.latest_results(self.store, self.run_id, self.rows)

    def _show(self, df: pl.DataFrame) -> None:
        self.frame = df
        options = [(self._label(r), int(r["result_id"])) for r in df.iter_rows(named=True)]
        if options == self._options:
            return
        keep = self.table.value
        self._updating = True  # the Select jumps to its first row when options change
        try:
            self._options = options
            self.table.options = options
            self.table.value = keep if any(v == keep for _, v in options) else None
        finally:
            self._updating = False

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._updating and change.get("new") is not None:
            self.open(int(change["new"]))

    def open(self, result_id: int) -> None:
        """Show one result: the email (escaped) beside its JSON (escaped)."""
        detail = explore.result_detail(self.store, result_id)
        if detail is None:
            self.email.value = f"<i>result {int(result_id)} not found</i>"
            self.json.value = ""
            return
        self.shown = result_id
        self.email.value = email_html(detail["email"], (detail["data"] or {}).get("evidence"))
        self.json.value = json_html(detail["data"], detail["result"])
