"""Deep checks: a judge model's per-field second opinion on sampled results, stored beside them.

``Judge(backend).check(email_text, result)`` sends the rubric (``quality.judge_messages``)
with the judge's own JSON schema (``quality.judge_json_schema``) to any ``Backend`` (the
run's own, or another server and model) and returns a ``JudgeOutcome``; it never raises a
backend error: a judge that is down, slow or answers nonsense gives a ``failed`` outcome
with the reason, and the unit it was judging is unaffected. It sends through the backend's
public ``complete`` like every other request (the router's health and statistics, the
endpoint breaker), with ``quality.JudgeVerdict`` as the request's reply model, so the schema
check is the backend's one guard, applied to the judge's own schema.

``judge_missing`` judges the sampled units of a run that have no judgement yet (a run that
ended before its judges, or one processed before judging was configured).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.errors import BackendError, ConfigError, ProcessingError, SchemaViolation
from emailwb.llm.contract import Backend, LLMRequest
from emailwb.quality.measures import JUDGED_FIELDS, JudgeVerdict, judge_json_schema, judge_messages
from emailwb.quality.stats import wilson_interval
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

log = logging.getLogger("emailwb.quality.judge")

JUDGEMENT_SQL = (
    "INSERT INTO judgements (run_id, unit_id, status, verdict, overall, notes, error, model, "
    "endpoint, latency_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(run_id, unit_id) DO UPDATE SET status = excluded.status, "
    "verdict = excluded.verdict, overall = excluded.overall, notes = excluded.notes, "
    "error = excluded.error, model = excluded.model, endpoint = excluded.endpoint, "
    "latency_s = excluded.latency_s, created_at = excluded.created_at"
)


@dataclass(slots=True)
class JudgeOutcome:
    """One judge call: ``done`` with a verdict per field, or ``failed`` with the reason."""

    status: str  # done | failed
    verdict: dict[str, str] | None = None  # field -> correct | incorrect | unsure
    overall: int | None = None
    notes: str = ""
    error: str | None = None
    model: str = ""
    endpoint: str = ""
    latency_s: float | None = None

    def params(self, run_id: int, unit_id: int) -> tuple[Any, ...]:
        """Parameters for ``JUDGEMENT_SQL``."""
        return (
            run_id,
            unit_id,
            self.status,
            json.dumps(self.verdict) if self.verdict is not None else None,
            self.overall,
            self.notes,
            self.error,
            self.model,
            self.endpoint,
            self.latency_s,
            runs.now_iso(),
        )


def parse_verdict(text: str) -> JudgeVerdict:
    """A judge reply as a ``JudgeVerdict`` (a Markdown fence is unwrapped); ValueError if not."""
    body = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, not an object")
    return JudgeVerdict.model_validate(data)


class Judge:
    """Second opinions through one backend; at most ``concurrency`` requests at a time."""

    def __init__(
        self,
        backend: Backend,
        *,
        timeout: float = 120.0,
        concurrency: int = 1,
        options: dict[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(
                "the judge's concurrency must be 1 or more",
                hint="pass concurrency=1 (a judge runs beside the main work)",
            )
        self.backend = backend
        self.timeout = timeout
        self.options = dict(options or {})
        self._sem = asyncio.Semaphore(concurrency)
        self.done = self.failed = 0

    async def check(self, email_text: str, result: dict[str, Any]) -> JudgeOutcome:
        """The judge's verdict on ``result`` for this email; never raises a BackendError."""
        backend = self.backend
        req = LLMRequest(
            messages=judge_messages(email_text, result),
            schema=judge_json_schema(),
            options=dict(self.options),
            key="judge",
            stream=False,
            timeout=self.timeout,
            reply_model=JudgeVerdict,
        )
        t0 = time.perf_counter()

        def failed(error: str, endpoint: str | None = None) -> JudgeOutcome:
            self.failed += 1
            return JudgeOutcome(
                "failed",
                error=error,
                model=backend.model or "",
                endpoint=endpoint or backend.url,
                latency_s=time.perf_counter() - t0,
            )

        async with self._sem:
            try:
                async with asyncio.timeout(self.timeout + 5):
                    comp = await backend.complete(req)
            except SchemaViolation as exc:  # the reply is not a verdict
                first = (exc.message.split(": ", 2)[-1].splitlines() or ["?"])[0][:200]
                return failed(
                    f"the judge's reply is not a verdict: {first} (a larger judge "
                    "model follows the rubric better)",
                    exc.endpoint,
                )
            except BackendError as exc:
                return failed(
                    f"the judge could not answer: {exc.message} (check the judge's "
                    "server, or `emailwb audit --judge` later)",
                    exc.endpoint,
                )
            except TimeoutError:
                return failed(
                    f"no judge reply within {self.timeout:g} s (raise the judge "
                    "timeout or use a faster judge model)"
                )
        self.done += 1
        data = JudgeVerdict.model_validate(comp.data).model_dump()
        return JudgeOutcome(
            "done",
            {f: data[f] for f in JUDGED_FIELDS},
            data["overall"],
            data["notes"],
            None,
            comp.model or backend.model or "",
            comp.endpoint,
            time.perf_counter() - t0,
        )


async def judge_missing(
    store: Store,
    run: str | int | None,
    backend: Backend,
    *,
    limit: int | None = None,
    judge_timeout: float = 120.0,
) -> int:
    """Judge the run's audit-queue units that have a done result and no judgement; how many."""
    from emailwb.quality.scoring import unit_texts

    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}",
            hint="see `emailwb status --json` for the runs in this database",
        )
    col = runs.UNIT_COLUMN[record.unit]
    rows = await store.aquery(
        f"SELECT a.unit_id, r.data FROM audit_queue a JOIN results r ON r.run_id = a.run_id "
        f"AND r.{col} = a.unit_id AND r.status = 'done' WHERE a.run_id = ? AND NOT EXISTS "
        f"(SELECT 1 FROM judgements j WHERE j.run_id = a.run_id AND j.unit_id = a.unit_id "
        f"AND j.status = 'done') ORDER BY a.unit_id" + (f" LIMIT {int(limit)}" if limit else ""),
        (record.id,),
    )
    if not rows:
        return 0
    texts = await asyncio.to_thread(unit_texts, store, record.unit, [r[0] for r in rows])
    judge = Judge(backend, timeout=judge_timeout)
    n = 0
    for r in rows:
        text = texts.get(r[0])
        if text is None:
            continue
        outcome = await judge.check(text.full_text, json.loads(r[1]))
        store.submit(JUDGEMENT_SQL, outcome.params(record.id, r[0]))
        n += 1
    await store.aflush()
    return n


def judgements_df(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """The run's judgements, one row per judged unit, the verdict's fields as columns."""
    record = runs.get_run(store, run)
    if record is None:
        raise ProcessingError(
            f"no run named {run!r}",
            hint="see `emailwb status --json` for the runs in this database",
        )
    rows = store.query(
        "SELECT unit_id, status, verdict, overall, notes, error, model, latency_s "
        "FROM judgements WHERE run_id = ? ORDER BY unit_id",
        (record.id,),
    )
    out = []
    for r in rows:
        verdict = json.loads(r["verdict"]) if r["verdict"] else {}
        out.append(
            {
                "unit_id": r["unit_id"],
                "status": r["status"],
                "overall": r["overall"],
                **{f: verdict.get(f) for f in JUDGED_FIELDS},
                "notes": r["notes"],
                "error": r["error"],
                "model": r["model"],
                "latency_s": r["latency_s"],
            }
        )
    schema = {
        "unit_id": pl.Int64,
        "status": pl.Utf8,
        "overall": pl.Int64,
        **{f: pl.Utf8 for f in JUDGED_FIELDS},
        "notes": pl.Utf8,
        "error": pl.Utf8,
        "model": pl.Utf8,
        "latency_s": pl.Float64,
    }
    return pl.DataFrame(out, schema=schema)


def judge_accuracy(
    store: Store, run: str | int | None = None, confidence: float = 0.95
) -> pl.DataFrame:
    """Per field: the judge's share of "correct" among correct + incorrect, Wilson interval."""
    df = judgements_df(store, run).filter(pl.col("status") == "done")
    rows = []
    for f in JUDGED_FIELDS:
        vals = df[f].to_list() if df.height else []
        ok, bad = vals.count("correct"), vals.count("incorrect")
        n = ok + bad
        low, high = wilson_interval(ok, n, confidence)
        rows.append(
            {
                "field": f,
                "n": n,
                "correct": ok,
                "accuracy": ok / n if n else None,
                "low": low if n else None,
                "high": high if n else None,
                "unsure": vals.count("unsure"),
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
            "unsure": pl.Int64,
        },
    )
