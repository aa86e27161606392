"""A/B verdicts: is run B (a faster configuration) no worse than run A, email by email?

``compare_runs(store, A, B, margin=0.05)`` pairs the two runs' results over the emails both
processed (each distinct pair of results once: a deduplicated run's one result per content
group meets a per-email run's result for every copy), then reports

* per-field agreement of the extractions (exact match for categorical fields, Jaccard
  overlap for lists; Wilson or bootstrap intervals: ``stats.field_agreement``);
* for each quality metric stored beside the results (``emailwb.quality.scoring``), the means of A
  and B and the mean paired difference B - A with a bootstrap confidence interval;
* a non-inferiority verdict per verdict metric (``stats.non_inferiority``: the interval's
  lower bound above -margin) and overall: "inferior" when B is worse by more than the
  margin on any verdict metric, "non-inferior" when it is not on every measurable one,
  otherwise "inconclusive" (more paired emails would settle it);
* throughput and latency of both runs, for the speed side of the claim.

The comparison is stored in ``comparisons`` (the run report shows it). ``canary(...)`` runs
configuration B on a deterministic sample of A's emails and compares. ``ComparePanel`` is
the notebook front end (``notebooks/05_compare.ipynb``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import ProcessingError
from emailwb.quality.scoring import METRIC_COLUMNS, ensure_quality
from emailwb.quality.stats import (
    AGREEMENT_FIELDS,
    bootstrap_ci,
    field_agreement,
    non_inferiority,
    percentile,
)
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

#: the metrics the verdict rests on (higher is better): a unit that ended with a valid result,
#: extracted values found in the email, money mentions extracted, type agreeing with the rules
VERDICT_METRICS = ("ok", "grounding", "amount_recall", "type_agrees")
#: reported with their deltas, not part of the verdict
INFO_METRICS = (
    "schema_valid",
    "completeness",
    "grounding_people",
    "grounding_organizations",
    "grounding_amounts",
    "grounding_dates",
    "priority_agrees",
    "ungrounded_total",
    "amounts_missed",
    "truncated",
    "response_chars",
)
LOWER_IS_BETTER = frozenset({"ungrounded_total", "amounts_missed", "truncated"})


@dataclass(slots=True)
class MetricDelta:
    """One metric over the paired emails: both means and B - A with its interval."""

    metric: str
    n: int
    mean_a: float | None
    mean_b: float | None
    delta: float | None  # mean of B - A
    low: float | None
    high: float | None
    verdict: str | None = None  # non-inferior | inferior | inconclusive (verdict metrics)
    explanation: str = ""
    in_verdict: bool = False


@dataclass(slots=True)
class Comparison:
    """The A/B answer; ``as_dict()`` is what ``emailwb compare --json`` prints."""

    run_a: str
    run_b: str
    run_a_id: int
    run_b_id: int
    margin: float
    confidence: float
    pairs: int
    emails: int
    verdict: str
    explanation: str
    metrics: list[MetricDelta] = field(default_factory=list)
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    speed: dict[str, dict[str, Any]] = field(default_factory=dict)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric(self, name: str) -> MetricDelta:
        return next(m for m in self.metrics if m.metric == name)

    def text(self) -> str:
        """A plain-text table for the terminal."""
        lines = [
            f"A = {self.run_a!r}, B = {self.run_b!r}: {self.pairs} paired results over "
            f"{self.emails} emails; margin {self.margin:g}",
            f"verdict: {self.verdict.upper()}: {self.explanation}",
            "",
            f"{'metric':<26}{'n':>6}{'A':>9}{'B':>9}{'B - A':>9}  {'95% CI':<20} verdict",
        ]
        for m in self.metrics:
            ci = (
                f"[{fmt_number(m.low, '+')}, {fmt_number(m.high, '+')}]"
                if m.low is not None
                else ""
            )
            lines.append(
                f"{m.metric + (' *' if m.in_verdict else ''):<26}{m.n:>6}"
                f"{fmt_number(m.mean_a):>9}{fmt_number(m.mean_b):>9}{fmt_number(m.delta, '+'):>9}  {ci:<20} "
                f"{m.verdict or ''}"
            )
        lines += ["(* = part of the verdict)", "", "field agreement (A vs B):"]
        for name, a in self.agreement.items():
            lines.append(
                f"  {name:<22}{a['kind']:<8}n={a['n']:<5} {fmt_number(a['mean'])} "
                f"[{fmt_number(a['low'])}, {fmt_number(a['high'])}]"
            )
        sa, sb = self.speed.get("a", {}), self.speed.get("b", {})
        lines += [
            "",
            f"speed: A {fmt_number(sa.get('emails_per_min'), d=1)} emails/min, B "
            f"{fmt_number(sb.get('emails_per_min'), d=1)} emails/min; latency p50 A "
            f"{fmt_number(sa.get('latency_p50'), d=2)} s, B {fmt_number(sb.get('latency_p50'), d=2)} s",
        ]
        return "\n".join(lines)


def fmt_number(v: Any, sign: str = "", d: int = 3) -> str:
    """A number for a table: ``d`` decimals, ``sign`` "+" to show it, a dash for none or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:{sign}.{d}f}"


def _nan_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def run_record(store: Store, run: str | int) -> runs.RunRecord:
    record = runs.get_run(store, run)
    if record is None and isinstance(run, str) and run.isdigit():
        record = runs.get_run(store, int(run))
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}",
            hint="see `emailwb status --json` for the runs in this database",
        )
    return record


def paired_frame(store: Store, run_a: str | int, run_b: str | int) -> pl.DataFrame:
    """One row per distinct pair of results covering the same emails: statuses, data, metrics."""
    a, b = run_record(store, run_a), run_record(store, run_b)
    metric_cols = list(METRIC_COLUMNS)

    def side(record: runs.RunRecord) -> dict[int, dict[str, Any]]:
        col = runs.UNIT_COLUMN[record.unit]
        sel = ", ".join(f"q.{c}" for c in metric_cols)
        rows = store.query(
            f"SELECT r.id AS result_id, r.status, r.data, r.latency_s, {sel} FROM results r "
            f"LEFT JOIN quality q ON q.run_id = r.run_id AND q.unit_id = r.{col} "
            f"WHERE r.run_id = ?",
            (record.id,),
        )
        return {r["result_id"]: dict(r) for r in rows}

    pairs = store.query(
        "SELECT xa.result_id AS ra, xb.result_id AS rb, COUNT(*) AS emails "
        "FROM email_results xa JOIN email_results xb ON xb.email_id = xa.email_id "
        "AND xb.run_id = ? WHERE xa.run_id = ? GROUP BY xa.result_id, xb.result_id "
        "ORDER BY MIN(xa.email_id)",
        (b.id, a.id),
    )
    sa, sb = side(a), side(b)
    out: list[dict[str, Any]] = []
    for p in pairs:
        ra, rb = sa.get(p["ra"]), sb.get(p["rb"])
        if ra is None or rb is None:
            continue
        row: dict[str, Any] = {
            "result_a": p["ra"],
            "result_b": p["rb"],
            "emails": p["emails"],
            "status_a": ra["status"],
            "status_b": rb["status"],
            "data_a": ra["data"],
            "data_b": rb["data"],
            "ok_a": float(ra["status"] == "done"),
            "ok_b": float(rb["status"] == "done"),
            "latency_s_a": ra["latency_s"],
            "latency_s_b": rb["latency_s"],
        }
        for c in metric_cols:
            for tag, src in (("a", ra), ("b", rb)):
                v = src[c]
                row[f"{c}_{tag}"] = None if v is None else float(v)
        out.append(row)
    cols = [
        "result_a",
        "result_b",
        "emails",
        "status_a",
        "status_b",
        "data_a",
        "data_b",
        "ok_a",
        "ok_b",
        "latency_s_a",
        "latency_s_b",
        *(f"{c}_{t}" for c in metric_cols for t in ("a", "b")),
    ]
    schema = {
        c: (
            pl.Int64
            if c in ("result_a", "result_b", "emails")
            else pl.Utf8
            if c.startswith(("status", "data"))
            else pl.Float64
        )
        for c in cols
    }
    return pl.DataFrame(out, schema=schema)


def speed(store: Store, run: str | int) -> dict[str, Any]:
    """Throughput and latency of a run from its committed results."""
    record = run_record(store, run)
    row = store.query_one(
        "SELECT COUNT(*) AS units, SUM(status = 'done') AS done, "
        "SUM(CASE WHEN status = 'done' THEN emails ELSE 0 END) AS emails, "
        "MIN(created_at) AS first, MAX(created_at) AS last, SUM(prompt_tokens) AS prompt_tokens, "
        "SUM(completion_tokens) AS completion_tokens, SUM(cached_tokens) AS cached_tokens "
        "FROM results WHERE run_id = ?",
        (record.id,),
    )
    lat = [
        r[0]
        for r in store.query(
            "SELECT latency_s FROM results WHERE run_id = ? AND latency_s IS NOT NULL", (record.id,)
        )
    ]
    span = None
    if row and row["first"] and row["last"]:
        start = datetime.fromisoformat(record.started_at)
        span = (datetime.fromisoformat(row["last"]) - start).total_seconds()
    emails = int(row["emails"] or 0) if row else 0
    units = int(row["units"] or 0) if row else 0
    return {
        "run": record.name,
        "units": units,
        "done": int(row["done"] or 0) if row else 0,
        "emails": emails,
        "seconds": span,
        "emails_per_min": emails / span * 60 if span else None,
        "units_per_min": units / span * 60 if span else None,
        "latency_p50": percentile(lat, 0.5),
        "latency_p95": percentile(lat, 0.95),
        "prompt_tokens": int(row["prompt_tokens"] or 0) if row else 0,
        "completion_tokens": int(row["completion_tokens"] or 0) if row else 0,
        "cached_tokens": int(row["cached_tokens"] or 0) if row else 0,
        "preset": record.config.get("preset"),
        "mode": record.config.get("mode"),
        "unit": record.unit,
    }


def compare_runs(
    store: Store,
    run_a: str | int,
    run_b: str | int,
    *,
    margin: float = 0.05,
    metrics: Sequence[str] = VERDICT_METRICS,
    confidence: float = 0.95,
    n_boot: int = 2000,
    save: bool = True,
) -> Comparison:
    """The A/B comparison of two runs over the emails both processed (see the module doc).

    Quality rows missing from either run are computed first (``scoring.ensure_quality``).
    """
    a, b = run_record(store, run_a), run_record(store, run_b)
    if a.id == b.id:
        raise ProcessingError(
            "compare needs two different runs",
            hint="pass the baseline run first and the candidate second",
        )
    unknown = [m for m in metrics if m != "ok" and m not in METRIC_COLUMNS]
    if unknown:
        raise ProcessingError(
            f"unknown metrics {unknown}", hint=f"use ok or any of {', '.join(METRIC_COLUMNS)}"
        )
    ensure_quality(store, a.id)
    ensure_quality(store, b.id)
    df = paired_frame(store, a.id, b.id)
    if df.height == 0:
        raise ProcessingError(
            f"runs {a.name!r} and {b.name!r} share no processed emails",
            hint="run both over the same store, or use a canary (`emailwb run --canary-of A`)",
        )
    deltas: list[MetricDelta] = []
    for name in dict.fromkeys([*metrics, *INFO_METRICS]):
        if name != "ok" and name not in METRIC_COLUMNS:
            continue
        va, vb = df[f"{name}_a"].to_list(), df[f"{name}_b"].to_list()
        both = [(x, y) for x, y in zip(va, vb, strict=True) if x is not None and y is not None]
        mean_a = sum(x for x, _ in both) / len(both) if both else None
        mean_b = sum(y for _, y in both) / len(both) if both else None
        diffs = [y - x for x, y in both]
        est, low, high = bootstrap_ci(diffs, n_boot=n_boot, confidence=confidence)
        d = MetricDelta(
            name,
            len(both),
            mean_a,
            mean_b,
            _nan_none(est),
            _nan_none(low),
            _nan_none(high),
            in_verdict=name in metrics,
        )
        if name in metrics and both:
            sign = -1.0 if name in LOWER_IS_BETTER else 1.0
            v = non_inferiority([sign * x for x in diffs], margin, confidence, n_boot=n_boot)
            d.verdict, d.explanation = v.verdict, v.explanation
        elif name in metrics:
            d.explanation = "not measurable on these emails (no paired values)"
        deltas.append(d)
    judged = [d for d in deltas if d.in_verdict and d.verdict is not None]
    worse = [d.metric for d in judged if d.verdict == "inferior"]
    unsure = [d.metric for d in judged if d.verdict == "inconclusive"]
    if not judged:
        verdict, why = "inconclusive", "no verdict metric could be measured on the paired emails"
    elif worse:
        verdict = "inferior"
        why = f"B is worse than A by more than {margin:g} on {', '.join(worse)}"
    elif unsure:
        verdict = "inconclusive"
        why = (
            f"B is not shown to be within {margin:g} of A on {', '.join(unsure)}: "
            f"compare on more emails"
        )
    else:
        verdict = "non-inferior"
        why = (
            f"B is not worse than A by more than {margin:g} on "
            f"{', '.join(d.metric for d in judged)}"
        )
    done = df.filter((pl.col("status_a") == "done") & (pl.col("status_b") == "done"))
    data_a = [json.loads(x) for x in done["data_a"].to_list()]
    data_b = [json.loads(x) for x in done["data_b"].to_list()]
    agreement = {
        k: {
            "kind": v.kind,
            "n": v.n,
            "mean": _nan_none(v.mean),
            "low": _nan_none(v.low),
            "high": _nan_none(v.high),
        }
        for k, v in field_agreement(data_a, data_b, AGREEMENT_FIELDS).items()
    }
    comp = Comparison(
        a.name,
        b.name,
        a.id,
        b.id,
        margin,
        confidence,
        df.height,
        int(df["emails"].sum()),
        verdict,
        why,
        deltas,
        agreement,
        {"a": speed(store, a.id), "b": speed(store, b.id)},
    )
    if save:
        comp.id = save_comparison(store, comp)
    return comp


def save_comparison(store: Store, comp: Comparison) -> int:
    """Store a comparison (the run report shows the latest per pair of runs); its id."""
    detail = json.dumps(comp.as_dict(), default=str)
    fut = store.call(
        lambda conn: (
            conn.execute(
                "INSERT INTO comparisons (run_a, run_b, margin, verdict, detail, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (comp.run_a_id, comp.run_b_id, comp.margin, comp.verdict, detail, runs.now_iso()),
            ).lastrowid
        )
    )
    rowid = fut.result()
    assert rowid is not None  # an INSERT sets it
    return int(rowid)


def comparisons_for(store: Store, run: str | int) -> list[dict[str, Any]]:
    """The latest stored comparison of each pair of runs this run is part of."""
    record = run_record(store, run)
    rows = store.query(
        "SELECT c.detail FROM comparisons c JOIN (SELECT MAX(id) AS id FROM comparisons "
        "WHERE run_a = ? OR run_b = ? GROUP BY run_a, run_b) m ON m.id = c.id ORDER BY c.id",
        (record.id, record.id),
    )
    return [json.loads(r[0]) for r in rows]
