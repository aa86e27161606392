"""Result persistence: one row per unit and run, written through the store's single writer.

``ResultWriter`` turns an outcome into a ``results`` row: a done unit's validated data, raw
text, tokens, latency, time to first token, attempts, endpoint, model and template; a
failed unit's exception class, an actionable reason and the raw reply when there was one.
Rows go to the store's writer in small groups (one thread wake-up per group, committed in
the writer's batched transactions), or, in the ``reference`` configuration, each through a
new SQLite connection (open, insert, commit, close) as the original design did. A done
result is never replaced; a failed one is, by a later attempt after ``retry_failed``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from emailwb.errors import BackendError, SchemaViolation
from emailwb.store.runs import UNIT_COLUMN, now_iso

if TYPE_CHECKING:
    from emailwb.store.database import Store

WRITE_GROUP = 64  # rows handed to the store's writer together
WRITE_DELAY_S = 0.02  # at the latest this long after the first row of a group

_RESULT_FIELDS = (
    "run_id",
    "status",
    "data",
    "raw",
    "error",
    "reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "latency_s",
    "ttft_s",
    "attempts",
    "endpoint",
    "model",
    "template_name",
    "template_version",
    "truncated",
    "emails",
    "created_at",
    "phase",
)


def result_sql(unit: str) -> str:
    """The upsert of one result: a done result is never replaced; a failed one may be."""
    col = UNIT_COLUMN[unit]
    names = (*_RESULT_FIELDS, col)
    updates = ", ".join(f"{n} = excluded.{n}" for n in _RESULT_FIELDS if n != "run_id")
    return (
        f"INSERT INTO results ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT(run_id, {col}) DO UPDATE SET {updates} WHERE results.status != 'done'"
    )


def result_params(
    run_id: int,
    unit_id: int,
    *,
    status: str,
    data: dict[str, Any] | None = None,
    raw: str | None = None,
    error: str | None = None,
    reason: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cached_tokens: int | None = None,
    latency_s: float | None = None,
    ttft_s: float | None = None,
    attempts: int = 1,
    endpoint: str | None = None,
    model: str | None = None,
    template_name: str | None = None,
    template_version: str | None = None,
    truncated: bool = False,
    emails: int = 1,
    phase: str | None = None,
) -> tuple[Any, ...]:
    """Parameters for ``result_sql`` in its column order."""
    # strict JSON: a NaN or Infinity raises here instead of being stored as invalid JSON
    return (
        run_id,
        status,
        json.dumps(data, separators=(",", ":"), allow_nan=False) if data is not None else None,
        raw,
        error,
        reason,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        latency_s,
        ttft_s,
        attempts,
        endpoint,
        model,
        template_name,
        template_version,
        int(truncated),
        emails,
        now_iso(),
        phase,
        unit_id,
    )


def failure_reason(exc: BackendError, attempts: int) -> str:
    """One sentence: what went wrong and what to do next."""
    what = (
        "the reply broke the output schema"
        if isinstance(exc, SchemaViolation)
        else (
            "the server refused the request"
            if not exc.transient
            else f"still failing after {attempts} attempts"
        )
    )
    return f"{what}: {exc} (`emailwb retry-failed` re-queues it)"


class ResultWriter:
    """Writes the results of one run; counts what it wrote in this session."""

    def __init__(self, store: Store, run_id: int, unit: str) -> None:
        self.store = store
        self.run_id = run_id
        self.sql = result_sql(unit)
        self.done = self.failed = self.emails = 0
        self.tokens = {"prompt": 0, "completion": 0, "cached": 0}
        self._rows: list[tuple[Any, ...]] = []
        self._handle: asyncio.TimerHandle | None = None

    async def done_unit(
        self, unit: Any, comp: Any, attempts: int, phase: str | None = None
    ) -> None:
        """A validated completion for ``unit`` (a ``workqueue.Prepared``) sent under ``phase``."""
        await self._write(
            result_params(
                self.run_id,
                unit.id,
                status="done",
                data=comp.data,
                raw=comp.raw,
                prompt_tokens=comp.prompt_tokens,
                completion_tokens=comp.completion_tokens,
                cached_tokens=comp.cached_tokens,
                latency_s=comp.latency_s,
                ttft_s=comp.ttft_s,
                attempts=attempts,
                endpoint=comp.endpoint,
                model=comp.model,
                template_name=unit.template_name,
                template_version=unit.template_version,
                truncated=unit.truncated,
                emails=unit.emails,
                phase=phase,
            )
        )
        self.done += 1
        self.emails += unit.emails
        self.tokens["prompt"] += comp.prompt_tokens or 0
        self.tokens["completion"] += comp.completion_tokens or 0
        self.tokens["cached"] += comp.cached_tokens or 0

    async def failed_unit(
        self, unit: Any, exc: BackendError, attempts: int, phase: str | None = None
    ) -> None:
        """``unit`` failed for good with ``exc`` (the raw reply is kept when there is one)."""
        await self._write(
            result_params(
                self.run_id,
                unit.id,
                status="failed",
                raw=exc.raw,
                error=type(exc).__name__,
                reason=failure_reason(exc, attempts),
                attempts=attempts,
                endpoint=exc.endpoint,
                template_name=unit.template_name,
                template_version=unit.template_version,
                truncated=unit.truncated,
                emails=unit.emails,
                phase=phase,
            )
        )
        self.failed += 1

    async def _write(self, params: tuple[Any, ...]) -> None:
        """Collect a row; rows commit in groups with the store's writer (batched writes)."""
        self._rows.append(params)
        if len(self._rows) >= WRITE_GROUP:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self.flush)

    def flush(self) -> None:
        """Hand the rows collected so far to the store's writer (they commit with its batch)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        rows, self._rows = self._rows, []
        if rows:
            self.store.submit_many(self.sql, rows)
