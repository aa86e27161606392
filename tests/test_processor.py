"""The processor against real in-process HTTP servers (SimServer): faults, control, resume.

Units are small synthetic emails written straight into a real SQLite store, each with a
marker (``unit-<id>``) in its subject, so the server's request log tells which unit every
request was for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from emailwb.engine import processor as processor_mod
from emailwb.engine import reference, workqueue
from emailwb.engine.batch import run_batch
from emailwb.engine.processor import Processor
from emailwb.llm.router import make_backend
from emailwb.settings import RunConfig
from emailwb.store import runs
from emailwb.testing.faults import FaultPlan
from emailwb.testing.servers import SimServer

TYPES = ("deal", "newsletter", "request", "personal")


def make_units(
    store: Any, n: int, *, copies: int = 1, thread_size: int = 1, types: tuple[str, ...] = TYPES
) -> None:
    """``n`` content groups (``copies`` emails each), threads of ``thread_size`` groups."""

    def fn(conn: sqlite3.Connection) -> None:
        eid = 0
        for g in range(1, n + 1):
            t = (g - 1) // thread_size + 1
            conn.execute(
                "INSERT OR IGNORE INTO threads (id, thread_key, subject, size) VALUES (?, ?, ?, 0)",
                (t, f"t{t}", f"thread {t}"),
            )
            conn.execute(
                "INSERT INTO content_groups (id, content_key, size, email_type, priority) "
                "VALUES (?, ?, ?, ?, 0.5)",
                (g, f"k{g}", copies, types[g % len(types)]),
            )
            for c in range(copies):
                eid += 1
                conn.execute(
                    "INSERT INTO raw_messages (id, sha256, raw, size, source, ingested_at)"
                    " VALUES (?, ?, x'00', 1, 'test', '2001-01-01')",
                    (eid, f"h{eid}"),
                )
                conn.execute(
                    "INSERT INTO emails (id, raw_id, message_id, date, sender, subject, body, "
                    "new_text, source, group_id, thread_id, mailbox, folder) "
                    "VALUES (?, ?, ?, ?, 'trader@enron.com', ?, ?, ?, 'test', ?, ?, 'm', ?)",
                    (
                        eid,
                        eid,
                        f"m{eid}@x",
                        f"2001-03-{(g % 28) + 1:02d}T10:00:00+00:00",
                        f"unit-{g}: gas deal {g}",
                        f"Body of unit-{g}. Please confirm {g} MMBtu.",
                        f"Please confirm {g} MMBtu at $2.50 for unit-{g}.",
                        g,
                        t,
                        "inbox",
                    ),
                )
                if c == 0:
                    conn.execute(
                        "UPDATE content_groups SET canonical_email_id = ? WHERE id = ?", (eid, g)
                    )
            conn.execute("UPDATE threads SET size = size + ? WHERE id = ?", (copies, t))

    store.call(fn).result()


def asked(srv: SimServer) -> dict[int, int]:
    """Chat requests per unit, from the server's log."""
    out: dict[int, int] = {}
    for rec in srv.chat_requests:
        for part in rec.prompt.split("unit-")[1:2]:
            uid = int(part.split(":")[0].split(".")[0].split(" ")[0])
            out[uid] = out.get(uid, 0) + 1
    return out


def results(store: Any, run: str) -> dict[int, dict[str, Any]]:
    rec = runs.get_run(store, run)
    assert rec is not None
    col = runs.UNIT_COLUMN[rec.unit]
    return {
        r[col]: dict(r) for r in store.query("SELECT * FROM results WHERE run_id = ?", (rec.id,))
    }


def cfg(srv: SimServer, **kw: Any) -> RunConfig:
    base = dict(
        backend="ollama" if srv.kind == "ollama" else "openai",
        urls=[srv.url],
        model=srv.model,
        backoff_base=0.01,
        backoff_max=0.2,
        breaker_cooldown=0.1,
        timeout=5.0,
        plan="llm",
    )  # the model pipeline: every field by the model
    return RunConfig.default(**{**base, **kw})


async def run(store: Any, srv: SimServer, config: RunConfig, name: str = "t", **kw: Any):
    backend = make_backend(config.backend, srv.url, srv.model)
    try:
        proc = Processor(store, config, backend, run_name=name, seed=1, **kw)
        return proc, await proc.run_to_end()
    finally:
        await backend.aclose()


# --- faults -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_mixed_faults_and_a_restart_lose_nothing_and_never_reask(store, kind):
    n = 60
    make_units(store, n)
    plan = FaultPlan(
        rates={"http500": 0.06, "http503": 0.05, "hang": 0.04, "drop": 0.05, "broken_json": 0.05},
        per_request={25: "restart"},
        seed=7,
        retry_after=0.05,
        hang_s=30,
        restart_delay=0.3,
    )
    async with SimServer(kind=kind, slots=4, service_time=0.01, faults=plan) as srv:
        config = cfg(srv, timeout=0.4, retries=6, concurrency=4)
        _, summary = await run(store, srv, config)
        assert srv.restarts == 1
        got = results(store, "t")
        assert sorted(got) == list(range(1, n + 1))  # every unit ended
        for r in got.values():
            assert r["status"] in ("done", "failed")
            if r["status"] == "failed":
                assert r["reason"] and r["error"]
            else:
                assert json.loads(r["data"])["email_type"]
        counts = asked(srv)
        faulty = sum(1 for rec in srv.chat_requests if rec.fault)
        assert faulty >= 0.15 * len(srv.chat_requests)  # the faults really happened
        for uid, r in got.items():  # never asked more often than the attempts it records
            assert counts.get(uid, 0) <= r["attempts"], (uid, counts.get(uid), r)
        assert summary.done + summary.failed == n and summary.pending == 0
        assert summary.done >= n - 3
        before = len(srv.chat_requests)
        _, again = await run(store, srv, config)  # resume: nothing left to ask
        assert len(srv.chat_requests) == before
        assert again.status == "completed" and again.session_done == 0


async def test_schema_violation_is_retried_once_then_failed_with_raw_text(store):
    make_units(store, 6)
    plan = FaultPlan(match={"unit-3:": "schema_violation", "unit-4:": "garbage"})
    async with SimServer(kind="openai", faults=plan) as srv:
        _, summary = await run(store, srv, cfg(srv, concurrency=2))
        got = results(store, "t")
    for uid in (3, 4):
        assert got[uid]["status"] == "failed"
        assert got[uid]["attempts"] == 2
        assert got[uid]["error"] == "SchemaViolation"
        assert got[uid]["raw"]  # the reply is kept
        assert "schema" in got[uid]["reason"] and "retry-failed" in got[uid]["reason"]
    assert summary.done == 4 and summary.failed == 2


async def test_non_transient_error_fails_at_once(store):
    make_units(store, 3)
    async with SimServer(kind="ollama", faults=FaultPlan(match={"unit-2:": "http404"})) as srv:
        await run(store, srv, cfg(srv))
        got = results(store, "t")
    assert got[2]["status"] == "failed" and got[2]["attempts"] == 1
    assert got[2]["error"] == "ModelNotFound"


async def test_retry_after_is_honoured(store):
    make_units(store, 1)
    plan = FaultPlan(per_request={0: "http429"}, retry_after=0.3)
    async with SimServer(kind="openai", faults=plan) as srv:
        await run(store, srv, cfg(srv, concurrency=1))
        first, second = srv.chat_requests[:2]
        assert second.t_start - first.t_start >= 0.3
        assert results(store, "t")[1]["attempts"] == 2


async def test_breaker_waits_out_an_outage_without_spending_attempts(store):
    make_units(store, 8)
    async with SimServer(kind="openai", slots=2) as srv:
        config = cfg(srv, retries=2, breaker_threshold=2, breaker_cooldown=0.2, concurrency=2)
        await srv.stop()  # the server is down when the run starts...

        async def come_back() -> None:
            await asyncio.sleep(1.2)  # ...longer than retries alone would survive
            await srv.start()

        task = asyncio.create_task(come_back())
        proc, summary = await run(store, srv, config)
        await task
    assert summary.done == 8, results(store, "t")
    assert proc.breaker.opened >= 1


# --- control -----------------------------------------------------------------------------
async def wait_for(cond, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_pause_resume_stop_and_resume_without_reasking(store):
    n = 40
    make_units(store, n)
    async with SimServer(kind="openai", slots=4, service_time=0.05) as srv:
        backend = make_backend("openai", srv.url, srv.model)
        proc = Processor(store, cfg(srv, concurrency=4), backend, run_name="ctl")
        await proc.start()
        await wait_for(lambda: proc.metrics.done >= 5)
        proc.pause()
        assert proc.state == "paused"
        await wait_for(lambda: proc.gate.in_flight == 0)
        seen = len(srv.chat_requests)
        await asyncio.sleep(0.3)
        assert len(srv.chat_requests) == seen  # nothing new while paused
        proc.resume()
        await wait_for(lambda: proc.metrics.done >= 15)
        summary = await proc.stop()
        assert summary.status == "stopped" and 15 <= summary.done < n
        assert summary.pending == n - summary.done - summary.failed
        rec = runs.get_run(store, "ctl")
        assert rec is not None and rec.status == "stopped"
        first = asked(srv)
        proc2 = Processor(store, cfg(srv, concurrency=4), backend, run_name="ctl")
        summary2 = await proc2.run_to_end()
        await backend.aclose()
        assert summary2.status == "completed" and summary2.done == n
        done_before = {
            u for u, r in results(store, "ctl").items() if r["created_at"] <= rec.updated_at
        }
        total = asked(srv)
        for uid in done_before:  # committed before the stop: never asked again
            assert total[uid] == first[uid]
        assert all(total.get(u, 0) >= 1 for u in range(1, n + 1))


async def test_stop_cancelling_inflight_leaves_them_pending(store):
    make_units(store, 6)
    async with SimServer(kind="ollama", slots=4, service_time=30) as srv:
        backend = make_backend("ollama", srv.url, srv.model)
        proc = Processor(store, cfg(srv, concurrency=3), backend, run_name="c")
        await proc.start()
        await wait_for(lambda: len(srv.chat_requests) >= 3)
        summary = await asyncio.wait_for(proc.stop(cancel_inflight=True), 5)
        await backend.aclose()
    assert summary.status == "stopped" and summary.done == 0 and summary.pending == 6
    assert results(store, "c") == {}


# --- priorities ------------------------------------------------------------------------------
async def test_priority_order_and_live_reweighting(store, monkeypatch):
    monkeypatch.setattr(processor_mod, "PROFILE_EVERY_S", 0.05)
    monkeypatch.setattr(processor_mod, "SAMPLE_EVERY_S", 0.05)
    monkeypatch.setattr(workqueue, "BATCH", 2)
    make_units(store, 40)  # types cycle: newsletter(1) request(2) personal(3) deal(4)...
    runs.save_profile(store, "p", {"newsletter": 10})
    async with SimServer(kind="openai", slots=1, service_time=0.03) as srv:
        backend = make_backend("openai", srv.url, srv.model)
        config = cfg(srv, concurrency=1, priority_profile="p")
        proc = Processor(store, config, backend, run_name="prio")
        await proc.start()
        await wait_for(lambda: len(srv.chat_requests) >= 6)
        firsts = [u for u in asked_in_order(srv)][:6]
        assert all(u % 4 == 1 for u in firsts[:4]), firsts  # newsletters first
        proc.set_weights({"deal": 100})  # at once, from code
        mark = len(srv.chat_requests)
        await wait_for(lambda: len(srv.chat_requests) >= mark + 6)
        after = asked_in_order(srv)[mark + 2 : mark + 6]
        assert all(u % 4 == 0 for u in after), after  # deals now
        await runs.asave_profile(store, "p", {"personal": 1000})  # from another process
        await wait_for(lambda: proc.queue is not None and proc.queue.weights.get("personal"))
        mark = len(srv.chat_requests)
        await wait_for(lambda: len(srv.chat_requests) >= mark + 6)
        after = asked_in_order(srv)[mark + 2 : mark + 6]
        assert all(u % 4 == 3 for u in after), after
        await proc.stop()
        await backend.aclose()


def asked_in_order(srv: SimServer) -> list[int]:
    return [int(r.prompt.split("unit-")[1].split(":")[0]) for r in srv.chat_requests]


# --- retry-failed, reference, chain, export -------------------------------------------------
async def test_retry_failed_requeues_failures(store):
    make_units(store, 5)
    plan = FaultPlan(match={"unit-2:": "http500", "unit-5:": "http500"})
    async with SimServer(kind="openai", faults=plan) as srv:
        config = cfg(srv, retries=1, breaker_threshold=100)
        _, first = await run(store, srv, config, name="rf")
        assert first.failed == 2
        assert runs.retry_failed(store, "rf") == 2
        srv.faults.match.clear()
        _, second = await run(store, srv, config, name="rf")
    assert second.done == 5 and second.failed == 0 and second.session_done == 2
    assert asked(srv)[1] == 1  # done units were not asked again


async def test_reference_configuration(store, monkeypatch):
    make_units(store, 4, copies=2)
    opened: list[str] = []
    real_connect = sqlite3.connect

    def counting_connect(*a: Any, **k: Any) -> sqlite3.Connection:
        opened.append(str(a[0]))
        return real_connect(*a, **k)

    monkeypatch.setattr(reference.sqlite3, "connect", counting_connect)
    async with SimServer(kind="openai", slots=8, service_time=0.02) as srv:
        config = RunConfig.reference(
            backend="openai", urls=[srv.url], model=srv.model, sleep_between=0.05
        )
        assert config.concurrency == 1 and config.mode == "raw" and config.unit == "email"
        _, summary = await run(store, srv, config, name="ref")
        reqs = srv.chat_requests
    assert summary.done == 8  # every email, copies too: no deduplication
    assert len(opened) == 8  # a new connection per write
    spans = sorted((r.t_start, r.t_end) for r in reqs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end + 0.04  # one at a time, with the sleep between
    for r in reqs:
        msgs = r.body["messages"]
        assert len(msgs) == 1 and msgs[0]["content"].startswith("Email:")  # email first
        assert "Body of unit-" in msgs[0]["content"]  # raw body
    assert RunConfig.named("reference").sleep_between == 2.0
    assert RunConfig.named("default").concurrency == "auto"


async def test_chain_mode_one_call_per_thread_and_export_covers_every_email(store):
    make_units(store, 6, copies=2, thread_size=3)
    async with SimServer(kind="ollama") as srv:
        config = cfg(srv, chain=True)
        _, summary = await run(store, srv, config, name="chain")
        assert len(srv.chat_requests) == 2
        assert "[3/3]" in srv.chat_requests[0].prompt
    assert summary.done == 2 and summary.emails_done == 12
    df = runs.results_df(store, "chain")
    assert df.height == 12 and set(df["status"]) == {"done"}


async def test_copies_share_one_result(store):
    make_units(store, 3, copies=3)
    async with SimServer(kind="openai") as srv:
        _, summary = await run(store, srv, cfg(srv), name="dup")
        assert len(srv.chat_requests) == 3
    assert summary.emails_done == 9
    rows = store.query(
        "SELECT email_id, status FROM email_results WHERE run_id = "
        "(SELECT id FROM runs WHERE name = 'dup')"
    )
    assert len(rows) == 9


async def test_limit_and_status_json(store):
    make_units(store, 10)
    async with SimServer(kind="openai") as srv:
        _, summary = await run(store, srv, cfg(srv), name="lim", limit=4)
        assert summary.done == 4 and summary.pending == 6 and summary.status == "stopped"
        from emailwb.engine.throughput import status_json

        st = status_json(store, "lim")
        assert st["done"] == 4 and st["pending"] == 6 and st["run"]["name"] == "lim"
        assert st["run"]["config"]["schema_hash"] and "api_key" not in json.dumps(st)
        assert st["live"]["done"] == 4


async def test_run_batch_with_given_backend_and_provenance(store):
    make_units(store, 3)
    async with SimServer(kind="llama-server", slots=3) as srv:
        backend = make_backend("openai", srv.url, srv.model)
        seen: list[Processor] = []
        summary = await run_batch(
            store, cfg(srv, backend="openai"), backend=backend, run_name="rb", on_start=seen.append
        )
        await backend.aclose()
    assert summary.done == 3 and seen and seen[0].controller.limit >= 1
    rec = runs.get_run(store, "rb")
    assert rec is not None and rec.status == "completed" and rec.ended_at
    c = rec.config
    assert c["server_slots"] == 3 and c["backend_info"]["server_kind"] == "llama-server"
    assert c["concurrency_policy"]["policy"] == "auto" and c["templates"]
    assert c["urls"] == [srv.url] and c["model"] == srv.model


def test_run_names_resume_by_default() -> None:
    a = processor_mod.default_run_name(RunConfig.default(model="x"))
    assert a == processor_mod.default_run_name(RunConfig.default(model="x"))
    assert a != processor_mod.default_run_name(RunConfig.default(model="y"))


def test_unknown_preset_names_the_next_action(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="use 'default' or 'reference'"):
        RunConfig.named("fast")


async def test_processor_retry_failed_continues_a_finished_run(store):
    make_units(store, 4)
    async with SimServer(kind="openai", faults=FaultPlan(match={"unit-3:": "http404"})) as srv:
        backend = make_backend("openai", srv.url, srv.model)
        proc = Processor(store, cfg(srv), backend, run_name="rp")
        first = await proc.run_to_end()
        assert first.failed == 1
        srv.faults.match.clear()
        assert await proc.retry_failed() == 1
        second = await proc.wait()
        await backend.aclose()
    assert second.done == 4 and second.failed == 0 and second.status == "completed"


def test_breaker_opens_rests_and_closes() -> None:
    from emailwb.errors import BackendOverloaded, BackendServerError, SchemaViolation
    from emailwb.llm.breaker import EndpointBreaker, EndpointResting

    now = [0.0]
    b = EndpointBreaker(threshold=3, cooldown=1.0, clock=lambda: now[0])
    e = "http://x"
    for _ in range(2):
        b.failure(e, BackendServerError("500"), b.before(e))
    b.failure(e, BackendOverloaded("429"), b.before(e))  # back-pressure does not count
    b.failure(e, SchemaViolation("bad"), b.before(e))  # nor a bad reply
    assert b.state(e) == "closed"
    b.failure(e, BackendServerError("500"), b.before(e))
    assert b.state(e) == "open" and b.opened == 1
    with pytest.raises(EndpointResting) as info:
        b.before(e)
    assert 0.9 < info.value.retry_after <= 1.0 and info.value.transient
    now[0] = 1.5
    assert b.before(e) is True  # half-open: one trial...
    with pytest.raises(EndpointResting):
        b.before(e)  # ...at a time
    b.failure(e, BackendServerError("500"), True)  # the trial failed: rest twice as long
    now[0] = 3.0
    with pytest.raises(EndpointResting):
        b.before(e)
    now[0] = 3.6
    assert b.before(e) is True
    b.success(e)
    assert b.state(e) == "closed" and b.before(e) is False
