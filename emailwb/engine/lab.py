"""The prompt lab's engine: try a prompt version on a sample of emails, compare two.

``try_prompt`` sends each sampled email the request a run with that version would send
(``workqueue.prompt_for`` and ``requests.request_for``, the same schema guard, the plan's
composition of the reply with the facts), one request per email through the normal
backends, and keeps every reply in the store by (prompt hash, plan, model, email): trying
the same draft again asks nothing. A reply that breaks the schema is a failed trial with
the reason (a draft that asks for prose fails here, before a run is launched).
``compare_trials`` puts two versions side by side: per email the fields that differ; per
version the reply tokens, latency, valid replies, grounding and, where labels exist,
accuracy per field with the paired difference (B - A) and its bootstrap interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailwb.engine.requests import request_for
from emailwb.engine.workqueue import prompt_for
from emailwb.errors import BackendError, ConfigError
from emailwb.facts.cache import facts_for
from emailwb.facts.plans import compose, get_plan
from emailwb.llm.prompts import PromptVersion
from emailwb.mail.detect import detect
from emailwb.quality import gold
from emailwb.quality.stats import bootstrap_ci, paired_differences
from emailwb.settings import RunConfig
from emailwb.store import prompts as lab_rows
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.llm.contract import Backend
    from emailwb.store.database import Store

SAMPLE_SIZE = 12
#: the result's keys that are not extracted fields (left out of "fields that differ")
_NOT_FIELDS = frozenset({"evidence", "sources", "plan", "refused"})


@dataclass(slots=True)
class Trial:
    """One email's reply under one prompt version."""

    email_id: int
    message_id: str
    ok: bool
    data: dict[str, Any] | None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    cached: bool = False  # answered from the store: no request was sent


def model_key(cfg: RunConfig) -> str:
    """What the replies depend on besides the prompt and the email: backend, endpoints,
    model, options, JSON format, budget and mode (hashed)."""
    key = {
        "backend": cfg.backend,
        "urls": sorted(cfg.urls),
        "model": cfg.model,
        "options": cfg.options,
        "json_format": cfg.json_format,
        "token_budget": cfg.token_budget,
        "mode": cfg.mode,
    }
    text = json.dumps(key, sort_keys=True, default=str)
    return (
        f"{cfg.backend}:{cfg.model or 'default'}:{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    )


def audit_queue_emails(store: Store) -> list[int]:
    """The email each unit in any run's audit queue stands for (its first), in queue order."""
    out: list[int] = []
    for r in store.query("SELECT DISTINCT run_id FROM audit_queue ORDER BY run_id"):
        record = runs.get_run(store, int(r["run_id"]))
        if record is None:
            continue
        units = [
            int(u["unit_id"])
            for u in store.query(
                "SELECT unit_id FROM audit_queue WHERE run_id = ? ORDER BY added_at, unit_id",
                (record.id,),
            )
        ]
        for ids in runs.unit_email_ids(store, record.unit, units).values():
            if ids:
                out.append(min(ids))
    return list(dict.fromkeys(out))


def lab_sample(
    store: Store,
    *,
    email_type: str | None = None,
    message_ids: Sequence[str] | None = None,
    email_ids: Sequence[int] | None = None,
    n: int = SAMPLE_SIZE,
) -> list[int]:
    """Email ids to try prompts on: the given ids or Message-IDs (in order), the canonical
    emails of one detected type, or (default) ``n`` spread over the detected types in turn,
    preferring emails of ordinary length (200 to 4,000 characters of new text)."""
    if email_ids:
        return list(dict.fromkeys(int(i) for i in email_ids))[:n] if n else list(email_ids)
    if message_ids:
        wanted = [m.strip() for m in message_ids if m.strip()]
        marks = ",".join("?" * len(wanted))
        rows = store.query(
            f"SELECT id, message_id FROM emails WHERE message_id IN ({marks}) ORDER BY id", wanted
        )
        first: dict[str, int] = {}
        for r in rows:
            first.setdefault(r["message_id"], int(r["id"]))
        missing = [m for m in wanted if m not in first]
        if missing:
            raise ConfigError(
                f"{len(missing)} of the {len(wanted)} Message-IDs are not in this store "
                f"(first: {missing[0]})",
                hint="ingest the mailbox that holds them, or pick the sample by type",
            )
        return [first[m] for m in wanted][:n]
    runs.detect_missing(store)
    store.flush()
    where, params = ("WHERE g.email_type = ?", (email_type,)) if email_type else ("", ())
    rows = store.query(
        "SELECT g.canonical_email_id AS id, g.email_type AS t, e.new_chars AS chars "
        f"FROM content_groups g JOIN emails e ON e.id = g.canonical_email_id {where} "
        "ORDER BY (e.new_chars BETWEEN 200 AND 4000) DESC, g.id",
        params,
    )
    if not rows:
        raise ConfigError(
            f"no emails to sample{f' of type {email_type!r}' if email_type else ''}",
            hint="ingest a mailbox first (emailwb ingest PATH), or pick another type",
        )
    by_type: dict[str, list[int]] = {}
    for r in rows:
        by_type.setdefault(r["t"] or "other", []).append(int(r["id"]))
    picked: list[int] = []
    queues = [list(v) for _, v in sorted(by_type.items())]
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


async def try_prompt(
    store: Store,
    backend: Backend | None,
    cfg: RunConfig,
    version: PromptVersion,
    email_ids: Sequence[int],
    *,
    concurrency: int = 4,
    only_cached: bool = False,
) -> list[Trial]:
    """Each email's reply under ``version`` (from the store when it was asked before);
    ``only_cached``: just the replies already stored, nothing is sent."""
    plan = get_plan(cfg.plan)
    ids = list(dict.fromkeys(int(i) for i in email_ids))
    key = model_key(cfg)
    known = await asyncio.to_thread(lab_rows.lab_replies, store, version.hash, plan.name, key, ids)
    message_ids = {
        int(r["id"]): r["message_id"]
        for r in await store.aquery(
            f"SELECT id, message_id FROM emails WHERE id IN ({','.join('?' * len(ids))})", ids
        )
    }
    missing = [] if only_cached else [i for i in ids if i not in known]
    ids = [i for i in ids if i in known] if only_cached else ids
    fresh: dict[int, Trial] = {}
    if missing:
        if plan.uses_llm and backend is None:
            raise ConfigError(
                f"plan {plan.name!r} asks the model, and the lab has no backend",
                hint="pass a backend (the lab panel starts the configured one on Try)",
            )
        emails = await asyncio.to_thread(runs.load_emails, store, missing, raw=cfg.mode == "raw")
        analysed = await asyncio.to_thread(facts_for, store, missing)
        gate = asyncio.Semaphore(max(concurrency, 1))

        async def one(email_id: int) -> Trial:
            email = emails[email_id]
            found = analysed.get(email_id)
            text = found.text if found is not None else email.body
            facts = found.facts if found is not None else None
            judgment = found.judgment if found is not None else None
            mid = message_ids.get(email_id, "")
            if not plan.uses_llm:
                data = compose(plan, text, facts=facts, judgment=judgment)
                return Trial(email_id, mid, True, data, latency_s=0.0)
            email_type = detect(email, key=email.message_id or None).email_type
            prompt = prompt_for(email, cfg, version, email_type, found)
            req = request_for(
                plan,
                prompt.messages,
                found,
                options=cfg.options,
                grammar=None,
                compact=cfg.compact_json and not plan.all_llm,
                cfg=cfg,
                key=f"lab-{email_id}",
            )
            assert backend is not None
            t0 = time.monotonic()
            async with gate:
                try:
                    comp = await backend.complete(req)
                except BackendError as exc:
                    return Trial(
                        email_id,
                        mid,
                        False,
                        None,
                        error=f"{type(exc).__name__}: {exc.message}",
                        latency_s=round(time.monotonic() - t0, 3),
                    )
            data = compose(plan, text, comp.data, facts=facts, judgment=judgment)
            return Trial(
                email_id,
                mid,
                True,
                data,
                prompt_tokens=comp.prompt_tokens,
                completion_tokens=comp.completion_tokens,
                latency_s=round(comp.latency_s, 3),
            )

        for trial in await asyncio.gather(*(one(i) for i in missing)):
            fresh[trial.email_id] = trial
        keep = [
            {
                "prompt_hash": version.hash,
                "plan": plan.name,
                "model": key,
                "email_id": t.email_id,
                "ok": t.ok,
                "data": t.data,
                "error": t.error,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "latency_s": t.latency_s,
            }
            for t in fresh.values()
            # a reply that broke the schema is the prompt's doing and is kept; a server that
            # was down or slow is not, so the next Try asks again
            if t.ok or (t.error or "").startswith("SchemaViolation")
        ]
        await asyncio.to_thread(lab_rows.save_lab_replies, store, keep)
    out: list[Trial] = []
    for i in ids:
        if i in fresh:
            out.append(fresh[i])
            continue
        r = known[i]
        out.append(
            Trial(
                i,
                message_ids.get(i, ""),
                r["ok"],
                r["data"],
                r["error"],
                r["prompt_tokens"],
                r["completion_tokens"],
                r["latency_s"],
                cached=True,
            )
        )
    return out


# --- comparison ---------------------------------------------------------------------------
def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_fields(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """The extracted fields whose values differ between two results (a missing result
    differs in every field the other has)."""
    a, b = a or {}, b or {}
    names = [k for k in dict.fromkeys([*a, *b]) if k not in _NOT_FIELDS]
    return [k for k in names if _canon(a.get(k)) != _canon(b.get(k))]


@dataclass(slots=True)
class VersionStats:
    """One version's measures on the sample."""

    name: str
    n: int
    valid: int
    completion_tokens: float | None
    latency_s: float | None
    grounded: float | None  # share of extracted strings found in the email
    cached: int
    accuracy: dict[str, float] = field(default_factory=dict)  # per labeled field


@dataclass(slots=True)
class LabComparison:
    """Two versions on the same emails."""

    a: VersionStats
    b: VersionStats
    rows: list[dict[str, Any]]  # per email: email_id, message_id, a, b, differs, errors
    deltas: dict[str, tuple[float, float, float]]  # field: (B - A, low, high), labeled emails
    labeled: int

    @property
    def failing(self) -> int:
        """Replies of version B that failed validation (or the server) on the sample."""
        return self.b.n - self.b.valid


def _per_email_score(
    name: str, data: Mapping[str, Any] | None, label: Mapping[str, Any]
) -> float | None:
    """1/0 (accuracy) or F1 of one email; None when its label says nothing of ``name`` (an
    audit label covers only the fields an auditor marked correct)."""
    if name not in label:
        return None
    if name in gold.ACCURACY_FIELDS:
        return float(gold.predicted_value(name, data) == label.get(name))
    tp, fp, fn = gold.match_counts(name, data, label)
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def _stats(
    name: str,
    trials: Sequence[Trial],
    texts: Mapping[str, str],
    labels: Mapping[str, Mapping[str, Any]],
) -> VersionStats:
    ok = [t for t in trials if t.ok]
    toks = [t.completion_tokens for t in ok if t.completion_tokens is not None]
    lat = [t.latency_s for t in trials if t.latency_s is not None and not t.cached]
    grounded = checked = 0
    for t in ok:
        g, c = gold.grounded_counts(t.data, texts.get(t.message_id, ""))
        grounded, checked = grounded + g, checked + c
    acc: dict[str, float] = {}
    scored = [t for t in trials if t.message_id in labels]
    if scored:
        for f in (*gold.ACCURACY_FIELDS, *gold.LIST_FIELDS):
            got = [_per_email_score(f, t.data, labels[t.message_id]) for t in scored]
            vals = [v for v in got if v is not None]
            if vals:
                acc[f] = sum(vals) / len(vals)
    return VersionStats(
        name,
        len(trials),
        len(ok),
        sum(toks) / len(toks) if toks else None,
        sum(lat) / len(lat) if lat else None,
        grounded / checked if checked else None,
        sum(t.cached for t in trials),
        acc,
    )


def compare_trials(
    store: Store,
    a_name: str,
    a: Sequence[Trial],
    b_name: str,
    b: Sequence[Trial],
    labels: Sequence[Mapping[str, Any]] | None = None,
) -> LabComparison:
    """Version A (the baseline) and B (the draft) on the same emails, side by side."""
    by_mid = {str(lab["message_id"]).strip(): lab for lab in labels or []}
    mids = {t.message_id for t in (*a, *b)}
    texts = gold.email_texts(store, mids)
    b_by_id = {t.email_id: t for t in b}
    rows = []
    for ta in a:
        tb = b_by_id.get(ta.email_id)
        rows.append(
            {
                "email_id": ta.email_id,
                "message_id": ta.message_id,
                "a": ta.data,
                "b": tb.data if tb else None,
                "differs": differing_fields(ta.data, tb.data if tb else None),
                "a_error": ta.error,
                "b_error": tb.error if tb else "not tried",
            }
        )
    deltas: dict[str, tuple[float, float, float]] = {}
    paired = [(ta, b_by_id[ta.email_id]) for ta in a if ta.email_id in b_by_id]
    paired = [(x, y) for x, y in paired if x.message_id in by_mid]
    if paired:
        for f in (*gold.ACCURACY_FIELDS, *gold.LIST_FIELDS):
            pairs = [
                (
                    _per_email_score(f, x.data, by_mid[x.message_id]),
                    _per_email_score(f, y.data, by_mid[y.message_id]),
                )
                for x, y in paired
            ]
            va = [p for p, q in pairs if p is not None and q is not None]
            vb = [q for p, q in pairs if p is not None and q is not None]
            if va:
                deltas[f] = bootstrap_ci(paired_differences(va, vb), seed=7)
    return LabComparison(
        _stats(a_name, a, texts, by_mid),
        _stats(b_name, b, texts, by_mid),
        rows,
        deltas,
        len(paired),
    )
