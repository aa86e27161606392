"""Quality inside the processor: metrics per result, deep-check sampling and judging, drift.

Real SQLite stores and real HTTP servers (SimServer); the answers are built per email so
grounding has something to find (``qualitykit``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from qualitykit import QUICK, answers, config_for, make_mail, sim_run, unit_facts

from emailwb.engine.processor import Processor
from emailwb.engine.throughput import status_json
from emailwb.llm.router import make_backend
from emailwb.quality.measures import deep_check_sample
from emailwb.quality.scoring import ensure_quality, quality_df
from emailwb.quality.watch import QualityConfig, QualityWatch
from emailwb.store import runs
from emailwb.testing.servers import SimServer


def _rows(store: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in store.query(sql, params)]


async def paused(proc: Processor, seconds: float = 10.0) -> None:
    """Until the processor is paused (the drift alarm's doing), at most ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if proc.state == "paused":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not paused within {seconds} s (state {proc.state})")


def _run_id(store: Any, name: str) -> int:
    rec = runs.get_run(store, name)
    assert rec is not None
    return rec.id


async def test_metrics_are_stored_beside_each_result(store):
    make_mail(store, 12)
    async with SimServer(answer=answers(bad_every=3)) as srv:
        _, summary = await sim_run(store, srv, "m")
    assert summary.done == 12
    q = {r["unit_id"]: r for r in quality_df(store, "m").to_dicts()}
    assert sorted(q) == list(range(1, 13))  # one row per result
    for g, r in q.items():
        assert r["status"] == "done" and r["phase"] == "main" and r["schema_valid"] == 1
        assert r["type_agrees"] == 1 and r["amounts_in_text"] == 1  # quoted $1 million: not own
        if g % 3 == 0:  # invented person, company and amount are flagged
            assert r["grounding"] == 0 and r["ungrounded_people"] == 1
            assert r["ungrounded_amounts"] == 1 and r["amounts_missed"] == 1
        else:
            assert r["grounding"] == 1 and r["amount_recall"] == 1 and r["ungrounded_total"] == 0
    assert {r["phase"] for r in _rows(store, "SELECT phase FROM results")} == {"main"}
    # a crash between a result and its metrics: ensure_quality fills the gap
    store.submit("DELETE FROM quality WHERE unit_id IN (2, 3)")
    store.flush()
    assert ensure_quality(store, "m") == 2
    assert quality_df(store, "m").height == 12


async def test_every_nth_sampler_picks_the_same_emails_in_two_runs(store):
    n, every = 40, 5
    make_mail(store, n, copies=2)  # 40 content groups, 80 emails
    expected = {g for g in range(1, n + 1) if deep_check_sample(f"k{g}", every)}
    assert 2 <= len(expected) < n  # the data really samples some, not all
    async with SimServer(answer=answers()) as srv:
        await sim_run(store, srv, "one")
        await sim_run(store, srv, "two", config=config_for(srv, concurrency=4))
        await sim_run(store, srv, "per-email", config=config_for(srv, dedup=False))
    queued = {
        name: {
            r["unit_id"]
            for r in _rows(
                store, "SELECT unit_id FROM audit_queue WHERE run_id = ?", _run_id(store, name)
            )
        }
        for name in ("one", "two", "per-email")
    }
    assert queued["one"] == queued["two"] == expected
    groups = {
        r["group_id"]
        for r in _rows(
            store,
            f"SELECT group_id FROM emails WHERE id IN ({','.join(map(str, queued['per-email']))})",
        )
    }
    assert groups == expected  # a per-email run samples the same content
    judged = _rows(
        store,
        "SELECT unit_id, status, verdict, overall FROM judgements WHERE run_id = ?",
        _run_id(store, "one"),
    )
    assert {r["unit_id"] for r in judged} == expected
    assert all(r["status"] == "done" and r["overall"] == 4 for r in judged)
    assert json.loads(judged[0]["verdict"])["people"] == "correct"


async def test_judge_failures_never_fail_a_unit(store):
    make_mail(store, 20)
    async with SimServer(answer=answers(judge=lambda body: "I think it is fine")) as srv:
        _, s1 = await sim_run(store, srv, "garbled-judge")
    dead = QualityConfig(
        sample_every=5,
        judge_backend="ollama",
        judge_model="x",
        judge_urls=["http://127.0.0.1:9"],
        judge_timeout=2,
    )
    async with SimServer(answer=answers()) as srv:
        _, s2 = await sim_run(store, srv, "dead-judge", quality=dead)
    for name, summary in (("garbled-judge", s1), ("dead-judge", s2)):
        assert summary.done == 20 and summary.failed == 0
        rows = _rows(
            store, "SELECT status, error FROM judgements WHERE run_id = ?", _run_id(store, name)
        )
        assert rows and all(r["status"] == "failed" for r in rows)
    errors = [r["error"] for r in _rows(store, "SELECT error FROM judgements")]
    assert any("not a verdict" in e for e in errors)
    assert any("could not answer" in e for e in errors)


DRIFT = dict(
    sample_every=1000,
    judge=False,
    baseline_size=10,
    window=10,
    threshold=0.3,
    drift_metrics=["grounding"],
)


async def test_drift_alarm_rolls_back_to_the_baseline_configuration(store):
    n, k, window = 60, 20, 10
    make_mail(store, n)
    async with (
        SimServer(answer=answers(), service_time=0.01) as trusted,
        SimServer(answer=answers(bad_after=k), service_time=0.01) as candidate,
    ):
        # the baseline: a run whose quality is trusted (a few units are enough to name it),
        # with whole raw bodies in its prompts (the candidate sends cleaned text)
        await sim_run(
            store,
            trusted,
            "trusted",
            quality=QUICK,
            limit=3,
            config=config_for(trusted, mode="raw"),
        )
        quality = QualityConfig(**DRIFT, on_drift="rollback", rollback_to="trusted")
        proc, summary = await sim_run(store, candidate, "candidate", quality=quality)
        asked_candidate = len(candidate.chat_requests)
        assert not any("> earlier" in r.prompt for r in candidate.chat_requests)
        assert all("> earlier" in r.prompt for r in trusted.chat_requests)  # raw prompts
    assert summary.done == n and summary.failed == 0
    rid = _run_id(store, "candidate")
    events = _rows(store, "SELECT kind, detail FROM run_events WHERE run_id = ? ORDER BY id", rid)
    assert [e["kind"] for e in events] == ["drift_alert", "rollback"]
    alert = json.loads(events[0]["detail"])
    assert alert["metric"] == "grounding" and k < alert["seen"] <= k + window  # within the window
    assert proc.quality.status()["phase"] == "baseline"
    res = _rows(store, "SELECT group_id, phase, endpoint FROM results WHERE run_id = ?", rid)
    main = [r for r in res if r["phase"] == "main"]
    base = [r for r in res if r["phase"] == "baseline"]
    assert {r["endpoint"] for r in main} == {candidate.url}
    assert {r["endpoint"] for r in base} == {trusted.url}  # after the rollback: the baseline's
    assert len(main) <= alert["seen"] + 6 and len(base) >= n - alert["seen"] - 6
    assert asked_candidate == len(main)
    q = {r["unit_id"]: r for r in quality_df(store, "candidate").to_dicts()}
    assert all(q[r["group_id"]]["grounding"] == 1 for r in base)  # grounded again
    # the alert is visible to `emailwb status` and the launch panel
    live = status_json(store, "candidate")["live"]
    assert "quality drift on grounding" in live["quality"]["alerts"][0]
    assert live["quality"]["phase"] == "baseline"


async def test_drift_alarm_pauses_and_rearms_after_resume(store):
    make_mail(store, 60)
    quality = QualityConfig(**DRIFT, on_drift="pause")
    async with SimServer(answer=answers(bad_after=15), service_time=0.01) as srv:
        cfg = config_for(srv)
        backend = make_backend(cfg.backend, srv.url, srv.model)
        proc = Processor(store, cfg, backend, run_name="pausing", quality=quality)
        try:
            await proc.start()
            for _ in range(2):
                await paused(proc)
                await asyncio.sleep(0.1)  # in-flight requests finish
                snap = proc.snapshot()
                assert snap.pending > 0 and proc.quality.paused_by_drift
                proc.resume()  # a person looks and goes on: the alarm is armed again
                await asyncio.sleep(0.05)
            summary = await proc.stop()
        finally:
            await backend.aclose()
    kinds = [r["kind"] for r in _rows(store, "SELECT kind FROM run_events ORDER BY id")]
    assert kinds[:4] == ["drift_alert", "pause", "drift_alert", "pause"]
    assert summary.done < 60


async def test_rollback_without_a_baseline_pauses_instead(store):
    make_mail(store, 40)
    quality = QualityWatch(QualityConfig(**DRIFT, on_drift="rollback"))
    async with SimServer(answer=answers(bad_after=12)) as srv:
        cfg = config_for(srv, concurrency=1)
        backend = make_backend(cfg.backend, srv.url, srv.model)
        proc = Processor(store, cfg, backend, run_name="fresh", quality=quality)
        try:
            await proc.start()
            await paused(proc)
            await proc.stop()
        finally:
            await backend.aclose()
    kinds = [r["kind"] for r in _rows(store, "SELECT kind FROM run_events")]
    assert kinds == ["drift_alert", "pause"]
    assert unit_facts(1)["person"]  # the facts helper stays importable for the other tests
