"""The canary: a new configuration on a deterministic sample of another run's emails.

``canary(store, run_a, config_b, sample=N)`` runs B only on the units that cover a fixed
sample of A's done contents (the processor's ``only_units``), then compares A and B with
``emailwb.quality.compare``. ``emailwb run --canary-of A --sample N`` is its CLI.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from emailwb.engine.batch import run_batch
from emailwb.engine.processor import RunSummary, default_run_name
from emailwb.errors import ProcessingError
from emailwb.quality.compare import Comparison, compare_runs, run_record
from emailwb.quality.watch import QualityConfig, QualityWatch
from emailwb.settings import RunConfig

if TYPE_CHECKING:
    from emailwb.store.database import Store


def canary_units(
    store: Store, run_a: str | int, unit: str, sample: int, salt: str = "canary"
) -> list[int]:
    """Units of kind ``unit`` covering a deterministic sample of ``sample`` contents A did."""
    a = run_record(store, run_a)
    if sample < 1:
        raise ProcessingError(
            "the canary sample must hold at least one email", hint="pass --sample N with N >= 1"
        )
    rows = store.query(
        "SELECT DISTINCT x.email_id, COALESCE(g.content_key, e.message_id) AS key, e.group_id, "
        "e.thread_id FROM email_results x JOIN emails e ON e.id = x.email_id "
        "LEFT JOIN content_groups g ON g.id = e.group_id WHERE x.run_id = ? AND x.status = 'done'",
        (a.id,),
    )
    if not rows:
        raise ProcessingError(
            f"run {a.name!r} has no done results to sample",
            hint="run A first (`emailwb run`), then its canary",
        )
    keys = sorted(
        {r["key"] for r in rows}, key=lambda k: hashlib.sha256(f"{salt}{k}".encode()).hexdigest()
    )[:sample]
    chosen = set(keys)
    col = {"group": "group_id", "thread": "thread_id", "email": "email_id"}[unit]
    return sorted({r[col] for r in rows if r["key"] in chosen and r[col] is not None})


async def canary(
    store: Store,
    run_a: str | int,
    config_b: RunConfig,
    *,
    sample: int = 50,
    backend: Any = None,
    run_name: str | None = None,
    margin: float = 0.05,
    quality: Any = None,
    api_key: str | None = None,
    **run_kw: Any,
) -> tuple[RunSummary, Comparison]:
    """Run configuration B on a deterministic sample of A's emails, then compare A and B.

    ``quality``: a ``drift.QualityConfig`` for B's run. ``run_kw`` go to ``run_batch``
    (``on_progress``, ``on_start``, ``limit``). Returns (B's run summary, the comparison).
    """
    a = run_record(store, run_a)
    units = canary_units(store, a.id, config_b.unit, sample)
    watch = QualityWatch(quality if isinstance(quality, QualityConfig) else None, api_key=api_key)
    name = run_name or f"canary-{a.name}-{default_run_name(config_b)}"
    summary = await run_batch(
        store,
        config_b,
        backend=backend,
        run_name=name,
        quality=watch,
        api_key=api_key,
        only_units=units,
        **run_kw,
    )
    return summary, compare_runs(store, a.id, summary.run_id, margin=margin)
