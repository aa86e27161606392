"""The run report: one self-contained HTML page (plotly inlined, no network needed to view it).

``write_report(store, run, "run.html")`` (``emailwb report RUN --out FILE.html``) shows

* the run: configuration, counts, throughput (emails/min, over time), latency and tokens;
* quality: each automatic metric's mean with a bootstrap interval (per configuration phase
  when a drift rollback happened), its rolling course, and the drift events;
* deep checks: how many emails were sampled and judged, the judge's per-field verdicts;
* audits: accuracy per field with Wilson intervals, from the people's labels;
* A/B verdicts: every stored comparison this run is part of (``emailwb compare``), plus a
  fresh one against ``compare_with`` when given.

Numbers are written as text tables as well as charts, so the page can be read, searched
and diffed without JavaScript.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import ConfigError, ProcessingError
from emailwb.facts.plans import FIELDS, get_plan
from emailwb.facts.records import money_rollup, results_frame
from emailwb.quality.measures import grounding_warning
from emailwb.quality.scoring import run_grounding
from emailwb.quality.stats import bootstrap_ci
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

REPORT_METRICS = (
    "schema_valid",
    "completeness",
    "grounding",
    "grounding_people",
    "grounding_organizations",
    "grounding_amounts",
    "grounding_dates",
    "amount_recall",
    "type_agrees",
    "priority_agrees",
    "truncated",
    "ungrounded_total",
    "amounts_missed",
    "response_chars",
)
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;
max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 14px}
th,td{border-bottom:1px solid #d0d7de;padding:3px 10px;text-align:left}
th{background:#f6f8fa} h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
.kpi{display:inline-block;margin:0 22px 10px 0}.kpi b{display:block;font-size:20px}
.muted{color:#57606a}
"""


def _f(v: Any, d: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{d}f}"
    return escape(str(v))


def _table(rows: list[dict[str, Any]], cls: str = "") -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_f(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kpis(items: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<span class='kpi'><span class='muted'>{escape(k)}</span><b>{_f(v, 2)}</b></span>"
        for k, v in items
    )


class _Figures:
    """Figures to HTML: plotly.js inlined once, with the first figure."""

    def __init__(self) -> None:
        try:
            import plotly.io as pio
        except ImportError as exc:
            raise ConfigError(
                "the report needs plotly", hint="pip install 'emailwb[notebooks]' (or plotly)"
            ) from exc
        self.pio = pio
        self.first = True

    def html(self, fig: Any) -> str:
        out = self.pio.to_html(
            fig, full_html=False, include_plotlyjs=self.first, config={"displaylogo": False}
        )
        self.first = False
        return out


def _seconds(values: list[str], start: str) -> list[float]:
    t0 = datetime.fromisoformat(start)
    return [(datetime.fromisoformat(v) - t0).total_seconds() for v in values]


def _speed_section(store: Store, record: runs.RunRecord, figs: _Figures) -> str:
    import plotly.graph_objects as go

    from emailwb.engine.throughput import status_json
    from emailwb.quality.compare import speed

    st = status_json(store, record.id)
    sp = speed(store, record.id)
    cfg = record.config
    config_rows = [
        {"setting": k, "value": json.dumps(cfg.get(k), default=str)}
        for k in (
            "preset",
            "plan",
            "backend",
            "model",
            "urls",
            "mode",
            "layout",
            "dedup",
            "chain",
            "concurrency",
            "sleep_between",
            "write_mode",
            "options",
        )
        if k in cfg
    ]
    share = run_grounding(store, record.id)
    warning = grounding_warning(share)
    html = ["<h2>Run</h2>"]
    if warning:
        html.append(
            "<div class='emailwb-grounding-warning' style='border:1px solid #b9770e;"
            "background:#fef5e7;color:#7e5109;padding:6px 10px;margin:4px 0'>"
            "<b>Most of what this run extracts is not in the emails.</b> "
            f"{escape(warning)}</div>"
        )
    html += [
        _kpis(
            [
                ("status", record.status),
                ("plan", cfg.get("plan", "llm")),
                ("grounding", "–" if share is None else f"{share:.0%}"),
                ("units done", st["done"]),
                ("failed", st["failed"]),
                ("pending", st["pending"]),
                ("emails covered", st["emails_done"]),
                ("emails/min", sp["emails_per_min"]),
                ("units/min", sp["units_per_min"]),
                ("latency p50 s", st["latency_p50"]),
                ("latency p95 s", st["latency_p95"]),
                ("ttft p50 s", st["ttft_p50"]),
                ("prompt tokens", st["prompt_tokens"]),
                ("completion tokens", st["completion_tokens"]),
                ("cached tokens", st["cached_tokens"]),
            ]
        ),
        f"<p class='muted'>unit: one LLM call per {escape(record.unit)}; started "
        f"{escape(record.started_at)}, ended {escape(str(record.ended_at or '–'))}</p>",
        "<details><summary>configuration</summary>",
        _table(config_rows),
        "</details>",
    ]
    df = store.query_df(
        "SELECT created_at, emails, status, latency_s FROM results "
        "WHERE run_id = ? ORDER BY created_at",
        (record.id,),
    )
    if df.height:
        t = _seconds(df["created_at"].to_list(), record.started_at)
        done = (
            df.with_columns(
                pl.when(pl.col("status") == "done").then(pl.col("emails")).otherwise(0).alias("e")
            )["e"]
            .cum_sum()
            .to_list()
        )
        fig = go.Figure(go.Scatter(x=t, y=done, mode="lines", name="emails covered"))
        fig.update_layout(
            title="Throughput: emails covered over time",
            height=320,
            xaxis_title="seconds since the run started",
            yaxis_title="emails",
        )
        html.append(figs.html(fig))
        lat = [v for v in df["latency_s"].to_list() if v is not None]
        if lat:
            fig = go.Figure(go.Histogram(x=lat, nbinsx=40))
            fig.update_layout(title="Latency per request (s)", height=300, xaxis_title="seconds")
            html.append(figs.html(fig))
    return "".join(html)


def _quality_section(store: Store, record: runs.RunRecord, figs: _Figures) -> str:
    import plotly.graph_objects as go

    from emailwb.quality.scoring import ensure_quality, quality_df

    ensure_quality(store, record.id)
    q = quality_df(store, record.id)
    html = ["<h2>Quality (automatic metrics per result)</h2>"]
    if q.height == 0:
        return html[0] + "<p class='muted'>no results with quality metrics yet</p>"
    phases = sorted({p for p in q["phase"].to_list() if p}) or ["main"]
    rows = []
    for m in REPORT_METRICS:
        row: dict[str, Any] = {"metric": m}
        for ph in [None, *phases] if len(phases) > 1 else [None]:
            sub = q if ph is None else q.filter(pl.col("phase") == ph)
            vals = [float(v) for v in sub[m].to_list() if v is not None]
            est, low, high = bootstrap_ci(vals, n_boot=1000)
            tag = "all" if ph is None else ph
            row[f"{tag} n"] = len(vals)
            row[f"{tag} mean"] = est if vals else None
            row[f"{tag} 95% CI"] = f"[{_f(low)}, {_f(high)}]" if vals else "–"
        rows.append(row)
    html.append(_table(rows, "emailwb-quality"))
    sampled = int(q["sampled"].sum())
    html.append(
        f"<p>{q.height} results with metrics; {sampled} sampled for the deep check "
        f"(every {escape(str((record.config.get('quality') or {}).get('sample_every', 100)))}"
        f"th content key).</p>"
    )
    window = max(5, min(50, q.height // 10 or 5))
    fig = go.Figure()
    for m in ("grounding", "schema_valid", "amount_recall", "type_agrees"):
        s = q[m].cast(pl.Float64)
        fig.add_trace(
            go.Scatter(y=s.rolling_mean(window, min_samples=1).to_list(), mode="lines", name=m)
        )
    events = store.query(
        "SELECT kind, message, detail, created_at FROM run_events WHERE run_id = ? ORDER BY id",
        (record.id,),
    )
    for e in events:
        if e["kind"] == "rollback":
            at = json.loads(e["detail"] or "{}").get("at_result")
            if at:
                fig.add_vline(
                    x=at, line_dash="dash", line_color="#cf222e", annotation_text="rollback"
                )
    fig.update_layout(
        title=f"Quality over the run (rolling mean of {window} results)",
        height=340,
        xaxis_title="result (commit order)",
        yaxis={"range": [0, 1.05]},
    )
    html.append(figs.html(fig))
    html.append("<h3>Drift events</h3>")
    html.append(
        _table(
            [
                {"time": e["created_at"], "event": e["kind"], "message": e["message"]}
                for e in events
            ],
            "emailwb-events",
        )
    )
    return "".join(html)


def _checks_section(store: Store, record: runs.RunRecord, figs: _Figures) -> str:
    from emailwb.quality.audit import accuracy
    from emailwb.quality.judge import judge_accuracy
    from emailwb.ui.audit_panel import accuracy_figure

    counts = store.query_one(
        "SELECT (SELECT COUNT(*) FROM audit_queue WHERE run_id = ?) AS queued, "
        "(SELECT COUNT(*) FROM judgements WHERE run_id = ? AND status = 'done') AS judged, "
        "(SELECT COUNT(*) FROM judgements WHERE run_id = ? AND status = 'failed') AS failed, "
        "(SELECT AVG(overall) FROM judgements WHERE run_id = ? AND status = 'done') AS overall, "
        "(SELECT COUNT(DISTINCT unit_id) FROM audits WHERE run_id = ? AND label IS NOT NULL) "
        "AS audited",
        (record.id,) * 5,
    )
    assert counts is not None  # a SELECT of subqueries without FROM returns one row
    html = [
        "<h2>Deep checks and audits</h2>",
        _kpis(
            [
                ("in the audit queue", counts["queued"]),
                ("judged", counts["judged"]),
                ("judge failures", counts["failed"]),
                ("judge overall (1-5)", counts["overall"]),
                ("audited by a person", counts["audited"]),
            ]
        ),
    ]
    ja = judge_accuracy(store, record.id)
    html.append("<h3>Judge's verdicts per field (share correct, Wilson 95%)</h3>")
    html.append(_table(ja.to_dicts(), "emailwb-judge"))
    acc = accuracy(store, record.id)
    html.append("<h3>Audited accuracy per field (Wilson 95%)</h3>")
    html.append(_table(acc.to_dicts(), "emailwb-audit"))
    if acc.filter(pl.col("n") > 0).height:
        html.append(figs.html(accuracy_figure(acc)))
    return "".join(html)


def _ab_section(
    store: Store,
    record: runs.RunRecord,
    figs: _Figures,
    compare_with: str | int | None,
    margin: float,
) -> str:
    from emailwb.quality.compare import compare_runs, comparisons_for
    from emailwb.ui.compare_panel import comparison_figure, comparison_html

    if compare_with is not None:
        compare_runs(store, compare_with, record.id, margin=margin)
    found = comparisons_for(store, record.id)
    html = ["<h2>A/B verdicts</h2>"]
    if not found:
        html.append(
            "<p class='muted'>no comparison yet: `emailwb compare RUN_A RUN_B` stores one</p>"
        )
    for c in found:
        html.append(comparison_html(c))
        html.append(figs.html(comparison_figure(c)))
    return "".join(html)


def marked_span(text: str, start: int, end: int, limit: int = 160) -> str:
    """``text[start:end]`` escaped and marked, with up to ``limit`` characters either side."""
    if not (0 <= start < end <= len(text)):
        return ""
    before = escape(text[max(0, start - limit) : start])
    after = escape(text[end : end + limit])
    return f"{before}<mark>{escape(text[start:end])}</mark>{after}"


def _intelligence_section(store: Store, record: runs.RunRecord) -> str:
    """What the run found: which fields its plan produces, the action items, the money."""
    plan_name = str(record.config.get("plan") or "default")
    try:
        plan = get_plan(plan_name)
    except ConfigError:
        plan = None
    html = ["<h2>Business intelligence</h2>"]
    if plan is not None:
        rows = [
            {
                "field": f,
                "source": plan.source(f),
                "value": (
                    f"not produced by plan '{plan.name}'"
                    if plan.source(f) == "none"
                    else "produced"
                ),
            }
            for f in FIELDS
        ]
        html += ["<h3>Fields and where they come from</h3>", _table(rows)]
    frame = results_frame(store, record.id)
    done = frame.filter(pl.col("status") == "done")
    legacy = done.filter(pl.col("result_version") == 1).height
    if legacy:
        html.append(
            f"<p class='muted'>{legacy} results were stored before result version 2: their "
            "unproduced fields may hold schema defaults, not answers.</p>"
        )
    asks = done.filter(pl.col("action_items").list.len() > 0) if done.height else done
    n_items = int(asks["action_items"].list.len().sum() or 0) if asks.height else 0
    html.append(f"<h3>Action items ({n_items} in {asks.height} emails)</h3>")
    if plan is not None and plan.source("action_items") == "none":
        html.append(f"<p class='muted'>not produced by plan '{plan.name}'</p>")
    items = []
    for mid, subject, values in asks.select("message_id", "subject", "action_items").iter_rows():
        for item in values or []:
            items.append(
                {
                    "subject": subject,
                    "ask": item["ask"],
                    "who": ", ".join(item["who"] or []),
                    "due": item["due"],
                    "message_id": mid,
                }
            )
    html.append(_table(items[:200]))
    if len(items) > 200:
        html.append(f"<p class='muted'>{len(items) - 200} more: see `emailwb export`</p>")
    rollup = money_rollup(done)
    html.append("<h3>Money by organization and month (totals apart from unit prices)</h3>")
    html.append(
        _table(
            [
                {
                    k: r[k]
                    for k in (
                        "organization",
                        "month",
                        "currency",
                        "kind",
                        "unit",
                        "total",
                        "low",
                        "high",
                        "amounts",
                        "emails",
                    )
                }
                for r in rollup.head(200).iter_rows(named=True)
            ]
        )
    )
    return "".join(html)


def build_report(
    store: Store,
    run: str | int | None = None,
    *,
    compare_with: str | int | None = None,
    margin: float = 0.05,
) -> str:
    """The report of one run (default: the latest) as a complete HTML document."""
    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}" if run is not None else "there is no run yet",
            hint="see `emailwb status --json` for the runs in this database",
        )
    figs = _Figures()
    parts = [
        _speed_section(store, record, figs),
        _intelligence_section(store, record),
        _quality_section(store, record, figs),
        _checks_section(store, record, figs),
        _ab_section(store, record, figs, compare_with, margin),
    ]
    title = f"emailwb run report: {record.name}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<p class='muted'>generated {escape(runs.now_iso())} UTC from "
        f"{escape(str(store.path))}</p>{''.join(parts)}</body></html>"
    )


def write_report(store: Store, run: str | int | None, out: str | Path, **kw: Any) -> Path:
    """Write ``build_report(...)`` to ``out``; the path."""
    path = Path(out)
    if path.parent and not path.parent.exists():
        raise ConfigError(
            f"the folder {path.parent} does not exist",
            hint="create it, or pass --out with an existing folder",
        )
    path.write_text(build_report(store, run, **kw), encoding="utf-8")
    return path
