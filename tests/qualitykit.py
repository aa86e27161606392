"""Helpers for the quality tests: realistic little emails, SimServer answers, runs.

Every unit ``g`` is an email that names a person, a company, an amount and a date, with a
marker ``unit-<g>`` in its subject. ``grounded`` answers extract exactly those;
``ungrounded`` answers invent them; ``judge_reply`` answers the judge's rubric. Not a test
module (no ``test_`` prefix): imported by test_quality_pipeline, test_compare_report and
test_audit.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from emailwb.engine.processor import Processor
from emailwb.llm.router import make_backend
from emailwb.llm.schema import EmailAnalysis
from emailwb.quality.watch import QualityConfig, QualityWatch
from emailwb.settings import RunConfig
from emailwb.testing.servers import SimServer

TYPES = ("deal", "request", "meeting", "status_update")
PEOPLE = ("John Lavorato", "Louise Kitchen", "Sally Beck", "Greg Whalley")
COMPANIES = ("Dynegy", "El Paso", "Reliant Energy", "Duke Energy")


def unit_facts(g: int) -> dict[str, Any]:
    """What email ``g`` says (and what a grounded answer extracts)."""
    return {
        "person": PEOPLE[g % len(PEOPLE)],
        "company": COMPANIES[g % len(COMPANIES)],
        "amount": g * 1000 + 500,
        "date": f"12/{g % 28 + 1}/2000",
        "type": TYPES[g % len(TYPES)],
    }


def make_mail(store: Any, n: int, *, copies: int = 1) -> None:
    """``n`` content groups of ``copies`` emails each (one thread per group)."""

    def fn(conn: sqlite3.Connection) -> None:
        eid = 0
        for g in range(1, n + 1):
            f = unit_facts(g)
            conn.execute(
                "INSERT INTO threads (id, thread_key, subject, size) VALUES (?, ?, ?, ?)",
                (g, f"t{g}", f"thread {g}", copies),
            )
            conn.execute(
                "INSERT INTO content_groups (id, content_key, size, email_type, priority)"
                " VALUES (?, ?, ?, ?, 0.5)",
                (g, f"k{g}", copies, f["type"]),
            )
            text = (
                f"{f['person']} agreed with {f['company']} on the storage deal. We pay "
                f"${f['amount']:,} per month for unit-{g} starting {f['date']}. "
                f"Please confirm by Friday."
            )
            for c in range(copies):
                eid += 1
                conn.execute(
                    "INSERT INTO raw_messages (id, sha256, raw, size, source, ingested_at)"
                    " VALUES (?, ?, x'00', 1, 'test', '2001-01-01')",
                    (eid, f"h{eid}"),
                )
                conn.execute(
                    "INSERT INTO emails (id, raw_id, message_id, date, sender, sender_name, "
                    "to_addrs, subject, body, new_text, source, group_id, thread_id, mailbox, "
                    "folder) VALUES (?, ?, ?, ?, 'jeff.skilling@enron.com', 'Jeff Skilling', ?, "
                    "?, ?, ?, 'test', ?, ?, 'skilling-j', 'inbox')",
                    (
                        eid,
                        eid,
                        f"m{eid}@x",
                        f"2000-11-{g % 28 + 1:02d}T10:00:00+00:00",
                        json.dumps(["kenneth.lay@enron.com"]),
                        f"unit-{g}: storage deal {g}",
                        text + "\n\n> earlier: the $1 million option is off the table.",
                        text,
                        g,
                        g,
                    ),
                )
                if c == 0:
                    conn.execute(
                        "UPDATE content_groups SET canonical_email_id = ? WHERE id = ?", (eid, g)
                    )
                    conn.execute("UPDATE threads SET root_email_id = ? WHERE id = ?", (eid, g))

    store.call(fn).result()


def _last_user(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            return str(msg.get("content") or "")
    return ""


def unit_of(body: dict[str, Any]) -> int:
    m = re.search(r"unit-(\d+)", _last_user(body))
    return int(m.group(1)) if m else 0


def is_judge(body: dict[str, Any]) -> bool:
    return any(
        "You are auditing" in str(m.get("content") or "") for m in body.get("messages") or []
    )


def analysis(g: int, *, invent: bool = False) -> dict[str, Any]:
    f = unit_facts(g)
    person, company, amount = (
        ("Zaphod Beeblebrox", "Acme Widgets", 987654321.0)
        if invent
        else (f["person"], f["company"], float(f["amount"]))
    )
    return EmailAnalysis(
        email_type=f["type"],
        priority="medium",
        summary=f"{person} and {company} on storage",
        people=[{"name": person}],
        organizations=[company],
        amounts=[{"value": amount, "currency": "USD", "context": "per month"}],
        dates=[] if invent else [{"date": f["date"], "what": "start"}],
        business_value={"level": "medium", "evidence": "Please confirm by Friday"},
    ).model_dump()


def judge_reply(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "email_type": "correct",
        "priority": "correct",
        "people": "correct",
        "organizations": "correct",
        "amounts": "correct",
        "dates": "unsure",
        "action_items": "correct",
        "business_value": "correct",
        "overall": 4,
        "notes": "",
    }


def answers(
    *,
    bad_after: int | None = None,
    bad_every: int | None = None,
    slight_every: int | None = None,
    judge: Callable[[dict[str, Any]], Any] = judge_reply,
) -> Callable[[dict[str, Any]], Any]:
    """A SimServer ``answer``: grounded, except after ``bad_after`` extraction requests or for
    every ``bad_every``-th unit (all invented); every ``slight_every``-th unit gets one
    invented person beside the real one; judge requests get ``judge(body)``."""
    seen = {"n": 0}

    def answer(body: dict[str, Any]) -> Any:
        if is_judge(body):
            return judge(body)
        seen["n"] += 1
        g = unit_of(body)
        bad = (bad_after is not None and seen["n"] > bad_after) or (
            bad_every is not None and g % bad_every == 0
        )
        out = analysis(g, invent=bad)
        if slight_every is not None and g % slight_every == 0:
            out["people"].append({"name": "Zaphod Beeblebrox", "role": ""})
        return out

    return answer


def config_for(srv: SimServer, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        backend="ollama" if srv.kind == "ollama" else "openai",
        urls=[srv.url],
        model=srv.model,
        backoff_base=0.01,
        backoff_max=0.2,
        breaker_cooldown=0.1,
        timeout=5.0,
        concurrency=2,
        plan="llm",
    )  # the quality watch judges model output
    return RunConfig.default(**{**base, **kw})


QUICK = QualityConfig(sample_every=5, judge_wait_s=10)


async def sim_run(
    store: Any,
    srv: SimServer,
    name: str,
    *,
    config: RunConfig | None = None,
    quality: QualityConfig | QualityWatch | None = QUICK,
    **kw: Any,
) -> tuple[Processor, Any]:
    """One processor run against ``srv``; (processor, summary)."""
    cfg = config or config_for(srv)
    backend = make_backend(cfg.backend, srv.url, srv.model)
    try:
        proc = Processor(store, cfg, backend, run_name=name, seed=1, quality=quality, **kw)
        return proc, await proc.run_to_end()
    finally:
        await backend.aclose()


async def prepared_store(store: Any, n: int = 30) -> dict[str, Any]:
    """A store with mail, a baseline run "A", an equal run "B", a worse run "C"; what it holds."""
    make_mail(store, n)
    async with SimServer(answer=answers(), service_time=0.0) as good:
        await sim_run(store, good, "A")
        await sim_run(store, good, "B")
    async with SimServer(answer=answers(bad_every=2), service_time=0.0) as bad:
        await sim_run(store, bad, "C")
    await store.aflush()
    return {"runs": ["A", "B", "C"], "units": n}


class ThreadedSim:
    """A SimServer on its own event loop in a thread, for CLI calls that run their own loop."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SimServer:
        self.thread.start()
        self.srv = SimServer(**self.kw)
        asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(10)
        return self.srv

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.srv.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
