"""The async parallel processor: every pending unit through the LLM, as fast as the server allows.

``run_batch(store, settings_or_config)`` is the one call the CLI and notebooks need: it
starts the backend (the embedded llama-server, or Ollama/OpenAI endpoints), warms it, runs
a ``Processor`` and tears everything down. ``Processor`` gives fine control:
``start()``, ``pause()``, ``resume()``, ``stop(cancel_inflight)``, ``set_weights()``,
``retry_failed()``, ``wait()``, with live ``metrics`` and ``snapshot()``; nothing in it
blocks the event loop, so a notebook can drive it from widgets.

How a unit flows: the ``WorkQueue`` (``emailwb.engine.workqueue``) pops the highest-priority unit
with its prompt prepared; the processor takes a slot from the ``Gate`` (the concurrency
limit, fixed or ``AutoConcurrency``), sends one request, and writes the result through the
store's single batched writer. Failures are policy here, never in the backends: transient
errors are retried with exponential backoff and jitter (Retry-After honoured); a reply that
breaks the schema is asked once more, then the unit fails with the raw text kept;
non-transient errors fail the unit at once; an ``EndpointBreaker`` rests an endpoint after
consecutive failures (waiting on it costs a unit no attempt). Every unit ends ``done`` or
``failed`` with a reason, or stays pending when stopped; a restart under the same run name
resumes without asking the LLM again for anything committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from emailwb.engine import reference
from emailwb.engine.autotune import Controller, Gate, Ticket, make_controller
from emailwb.engine.library import load_prompt
from emailwb.engine.requests import plan_schema_hash, request_for
from emailwb.engine.retry import backoff_delay, cut_by_token_limit, outcome, roomier
from emailwb.engine.throughput import Metrics, MetricsSnapshot
from emailwb.engine.workqueue import Prepared, WorkQueue
from emailwb.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    EmailwbError,
    ProcessingError,
    SchemaViolation,
)
from emailwb.facts.plans import Plan, compose, get_plan
from emailwb.llm.breaker import EndpointBreaker
from emailwb.llm.contract import Backend, BackendInfo, Completion
from emailwb.llm.grammar import grammar_hash
from emailwb.llm.prompts import describe_templates
from emailwb.llm.router import guard_backend
from emailwb.quality.measures import grounding_warning
from emailwb.quality.scoring import run_grounding
from emailwb.quality.watch import (
    Decision,
    Pause,
    Phase,
    QualityConfig,
    QualityWatch,
    RollBack,
    RunContext,
)
from emailwb.settings import RunConfig
from emailwb.store import runs
from emailwb.store.results import ResultWriter

if TYPE_CHECKING:
    from emailwb.store.database import Store

log = logging.getLogger("emailwb.engine.processor")

SAMPLE_EVERY_S = 1.0  # metrics history and on_progress
PROGRESS_EVERY_S = 2.0  # the live snapshot stored in runs.progress
PROFILE_EVERY_S = 2.0  # how often the priority profile row is re-read


@dataclass(slots=True)
class RunSummary:
    """What a run session did (also what ``run_batch`` returns)."""

    run_id: int
    name: str
    status: str  # completed | stopped | failed
    total: int
    done: int
    failed: int
    pending: int
    emails_done: int
    session_done: int  # units finished in this session
    elapsed_s: float
    units_per_min: float  # this session
    emails_per_min: float
    attempts: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    final_limit: int
    config: dict[str, Any]
    grounding: float | None = None  # share of the run's extracted values found in its emails
    warnings: list[str] = dataclasses.field(default_factory=list)  # each names the next step

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Processor:
    """One run over the store's pending units; see the module docstring."""

    def __init__(
        self,
        store: Store,
        config: RunConfig,
        backend: Backend | None,
        *,
        run_name: str | None = None,
        limit: int | None = None,
        info: BackendInfo | None = None,
        controller: Controller | None = None,
        on_progress: Callable[[MetricsSnapshot], Any] | None = None,
        server_pid: int | None = None,
        extra_provenance: dict[str, Any] | None = None,
        revive: Callable[[], Awaitable[Any]] | None = None,
        seed: int | None = None,
        quality: QualityWatch | QualityConfig | None = None,
        only_units: Collection[int] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.breaker = EndpointBreaker(config.breaker_threshold, config.breaker_cooldown)
        # None for a plan that asks no model (``facts``): units never reach a backend
        self.backend = guard_backend(backend, self.breaker) if backend is not None else None
        self.info = info
        slots = info.slots if info is not None else None
        self.controller = controller or make_controller(
            config.concurrency, max_concurrency=config.max_concurrency, slots_hint=slots
        )
        self.gate = Gate(self.controller)
        self.metrics = Metrics(server_pid=server_pid)
        self.limit = limit
        self.on_progress = on_progress
        self.name = run_name or default_run_name(config)
        self.run: runs.RunRecord | None = None
        self.queue: WorkQueue | None = None
        self.state = "idle"
        self.attempts = 0
        self._extra = extra_provenance or {}
        self._rng = random.Random(seed)
        self.plan = get_plan(config.plan)
        self._resume_evt = asyncio.Event()
        self._resume_evt.set()
        self._stop_evt = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[RunSummary] | None = None
        self.writer: ResultWriter | None = None
        self._revive = revive
        self._started = 0.0
        self._summary: RunSummary | None = None
        self.quality = QualityWatch.of(quality)  # a listener: metrics, deep checks, drift
        self.phase: Phase | None = None  # the configuration units are sent under now
        self.only_units = only_units  # a canary: only these units of the run

    # --- control ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Open (or resume) the run, load the queue and start working in the background."""
        if self._main is not None:
            raise ProcessingError(
                f"run {self.name!r} is already started",
                hint="call pause()/resume()/stop(), or make a new Processor",
            )
        self.run = await runs.open_run(self.store, self.name, self.config.unit, self.provenance())
        self.queue = WorkQueue(
            self.store,
            self.config,
            self.run.id,
            batch=lambda: max(4, min(64, 2 * self.controller.limit)),
            only=self.only_units,
        )
        pending = await self.queue.load()
        self.phase = await self.quality.start(
            RunContext(self.store, self.run.id, self.name, self.config, self.backend)
        )
        counts = await asyncio.to_thread(runs.run_counts, self.store, self.run.id)
        self.metrics.start(
            pending + counts["done"] + counts["failed"],
            counts["done"],
            counts["failed"],
            counts["emails_done"],
        )
        self.writer = reference.writer_for(self.store, self.run.id, self.config)
        self._started = time.monotonic()
        self.state = "running"
        runs.set_run_status(self.store, self.run.id, "running", total=self.metrics.total)
        self._main = asyncio.create_task(self._main_loop(), name=f"emailwb-run-{self.name}")

    async def wait(self) -> RunSummary:
        """Until the run completes or is stopped; the summary."""
        if self._main is None:
            raise ProcessingError("the processor was not started", hint="await processor.start()")
        return await asyncio.shield(self._main)

    async def run_to_end(self) -> RunSummary:
        """``start()`` then ``wait()``; a cancelled caller stops the run cleanly first."""
        await self.start()
        try:
            return await self.wait()
        except asyncio.CancelledError:
            await self.stop(cancel_inflight=True)
            raise

    def pause(self) -> None:
        """Send no new requests; those in flight finish and are committed."""
        if self.state == "running":
            self._resume_evt.clear()
            self.state = "paused"
            self.metrics.state = "paused"
            if self.run is not None:
                runs.set_run_status(self.store, self.run.id, "paused")

    def resume(self) -> None:
        """Continue after ``pause()``."""
        if self.state == "paused":
            self.state = "running"
            self.metrics.state = "running"
            self._resume_evt.set()
            self.quality.resumed()
            if self.run is not None:
                runs.set_run_status(self.store, self.run.id, "running")

    def request_stop(self, cancel_inflight: bool = False) -> None:
        """Ask to stop (safe from signal handlers): no new requests; in-flight ones finish,
        or are cancelled (and stay pending) with ``cancel_inflight``."""
        if self.state in ("stopped", "completed"):
            return
        self.state = "stopping"
        self.metrics.state = "stopping"
        self._stop_evt.set()
        self._resume_evt.set()  # wake a paused dispatcher so it can see the stop
        self.gate.poke()
        if cancel_inflight:
            for task in list(self._tasks):
                task.cancel()

    async def stop(self, cancel_inflight: bool = False) -> RunSummary:
        """Stop, commit everything finished, and return the summary."""
        self.request_stop(cancel_inflight)
        if self._main is None:
            raise ProcessingError("the processor was not started", hint="await processor.start()")
        return await asyncio.shield(self._main)

    def set_weights(self, weights: dict[str, float], *, persist: bool = True) -> None:
        """Re-order the pending units now; ``persist`` also updates the priority profile row."""
        if self.queue is None:
            raise ProcessingError("set_weights before start()", hint="await processor.start()")
        self.queue.reweigh(weights)
        if persist:
            self.store.submit(*runs.profile_sql(self.config.priority_profile, weights))

    async def retry_failed(self) -> int:
        """Re-queue this run's failures (deleted from results, back in the queue)."""
        if self.run is None or self.queue is None:
            raise ProcessingError("retry_failed before start()", hint="await processor.start()")
        if self.writer is not None:
            self.writer.flush()
        await self.store.aflush()
        run_id = self.run.id
        n = await self.store.acall(
            lambda conn: (
                conn.execute(
                    "DELETE FROM results WHERE run_id = ? AND status = 'failed'", (run_id,)
                ).rowcount
            )
        )
        added = await self.queue.load()
        self.metrics.failed = max(self.metrics.failed - n, 0)
        if self._main is not None and self._main.done() and added:
            self._main = None
            self._stop_evt.clear()
            await self.start_again()
        return int(n)

    async def start_again(self) -> None:
        """Continue a finished run (after ``retry_failed`` or new ingest)."""
        assert self.run is not None
        self.state = "running"
        self.metrics.state = "running"
        runs.set_run_status(self.store, self.run.id, "running")
        self._main = asyncio.create_task(self._main_loop(), name=f"emailwb-run-{self.name}")

    def snapshot(self) -> MetricsSnapshot:
        """Live metrics now."""
        self.metrics.in_flight = self.gate.in_flight
        self.metrics.limit = self.controller.limit
        return self.metrics.snapshot()

    def provenance(self) -> dict[str, Any]:
        """The run's stored configuration: never an API key."""
        info = self.info.as_dict() if self.info is not None else {}
        return {
            **self.config.model_dump(),
            "unit": self.config.unit,
            "backend_info": info,
            "model_digest": info.get("digest"),
            "server_slots": info.get("slots"),
            "plan_sources": self.plan.describe(),
            "schema_hash": plan_schema_hash(self.plan),
            "grammar_hash": grammar_hash() if self.config.compact_json else None,
            "templates": describe_templates(),
            "prompt_hash": load_prompt(self.store, self.config.prompt).hash,
            "concurrency_policy": self.controller.describe(),
            "quality": self.quality.describe(),
            # a canary: how many of the run's units it covers (a sample of another run's)
            "only_units": len(self.only_units) if self.only_units is not None else None,
            **self._extra,
        }

    # --- the loop --------------------------------------------------------------------------
    async def _main_loop(self) -> RunSummary:
        assert self.run is not None and self.queue is not None
        ticker = asyncio.create_task(self._ticker())
        status = "stopped"
        try:
            status = await self._dispatch()
        except asyncio.CancelledError:
            for task in list(self._tasks):
                task.cancel()
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._summary = await self._finish(status)
        return self._summary

    async def _dispatch(self) -> str:
        queue = self.queue
        assert queue is not None
        previous: asyncio.Task[None] | None = None
        budget = self.limit
        while True:
            await self._resume_evt.wait()
            if self._stop_evt.is_set():
                return "stopped"
            if budget is not None and budget <= 0:
                break
            nap = reference.nap_between(self.config)
            if nap > 0 and previous is not None:
                await asyncio.wait({previous})  # the reference design: one email, then a nap
                if await self._interruptible_sleep(nap):
                    return "stopped"
            ticket = await self.gate.acquire()
            if self._stop_evt.is_set() or not self._resume_evt.is_set():
                self.gate.abandon(ticket)
                continue
            unit = await queue.next()
            if unit is None:
                self.gate.abandon(ticket)
                break
            if self._stop_evt.is_set() or not self._resume_evt.is_set():
                queue.give_back(unit)  # stopped or paused while the batch was prepared
                self.gate.abandon(ticket)
                continue
            if budget is not None:
                budget -= 1
            task = asyncio.create_task(self._process(unit, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            previous = task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return "stopped" if self._stop_evt.is_set() else "completed"

    async def _interruptible_sleep(self, seconds: float) -> bool:
        """Sleep, or return True early when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_evt.wait(), timeout=seconds)
            return True
        return False

    def _delay(self, attempt: int, exc: BackendError) -> float:
        """Exponential backoff with jitter; at least the server's Retry-After."""
        return backoff_delay(
            attempt, exc, base=self.config.backoff_base, cap=self.config.backoff_max, rng=self._rng
        )

    async def _process(self, unit: Prepared, ticket: Ticket) -> None:
        cfg, phase = self.config, self.phase  # the configuration this unit runs under
        assert phase is not None
        attempts = schema_failures = 0
        held: Ticket | None = ticket  # ``ticket`` while it is not given back yet
        queue = self.queue
        assert queue is not None
        finished = False
        try:
            if phase.rebuild:  # after a rollback to a baseline with other prompts
                unit = await queue.rebuilt(unit, phase.config)
            plan = get_plan(phase.config.plan)
            if not plan.uses_llm:  # every field from the deterministic sources: nothing to ask
                self.gate.release(ticket, "ok")
                held = None
                finished = True
                await self._done(unit, _facts_completion(plan, unit), 0, phase.label)
                return
            req = request_for(
                plan,
                unit.messages,
                unit.analysed,
                options=phase.options,
                grammar=phase.grammar,
                compact=phase.config.compact_json,
                cfg=cfg,
                key=str(unit.id),
            )
            while True:
                attempts += 1
                self.attempts += 1
                try:
                    async with asyncio.timeout(cfg.timeout * 1.5 + 5):  # the backend's own timeout
                        comp = await phase.backend.complete(req)  # should fire first
                except TimeoutError as exc:
                    err: BackendError = BackendTimeout(
                        f"no reply within {cfg.timeout:g} s", endpoint=phase.backend.url
                    )
                    err.__cause__ = exc
                except BackendError as exc:
                    err = exc
                else:
                    self.gate.release(ticket, "ok")
                    held = None
                    self.metrics.attempt(True, retry=attempts > 1)
                    finished = True
                    analysed = unit.analysed
                    comp = dataclasses.replace(
                        comp,
                        data=compose(
                            plan,
                            unit.text,
                            comp.data,
                            facts=analysed.facts if analysed is not None else None,
                            judgment=analysed.judgment if analysed is not None else None,
                        ),
                    )
                    await self._done(unit, comp, attempts, phase.label)
                    return
                self.gate.release(ticket, outcome(err))
                held = None
                resting = isinstance(err, CircuitOpen) or isinstance(err.__cause__, CircuitOpen)
                if resting:
                    attempts -= 1  # waiting for a rested endpoint costs no attempt
                    self.attempts -= 1
                else:
                    log.info("unit %s, attempt %d: %s", unit.id, attempts, err.message)
                    self.metrics.attempt(False, retry=attempts > 1)
                    if self._revive is not None and isinstance(err, BackendUnavailable):
                        with contextlib.suppress(EmailwbError):
                            await self._revive()  # e.g. restart a dead local server
                if isinstance(err, SchemaViolation):
                    schema_failures += 1
                    if cut_by_token_limit(err):  # the retry gets room to finish
                        req.options = roomier(req.options, cfg.options)
                    if schema_failures > cfg.schema_retries:
                        finished = True
                        await self._failed(unit, err, attempts, phase.label)
                        return
                elif not err.transient:
                    finished = True
                    await self._failed(unit, err, attempts, phase.label)
                    return
                elif not resting and attempts > cfg.retries:
                    finished = True
                    await self._failed(unit, err, attempts, phase.label)
                    return
                delay = (err.retry_after or 0.05) if resting else self._delay(attempts, err)
                if await self._interruptible_sleep(delay):
                    return  # stopping: the unit stays pending
                await self._resume_evt.wait()
                if self._stop_evt.is_set():
                    return
                held = ticket = await self.gate.acquire()  # the next attempt's slot
        except asyncio.CancelledError:
            if held is not None:
                self.gate.abandon(held)
            raise  # stays pending: nothing was committed
        finally:
            if finished:
                queue.finished(unit.id)
            else:
                queue.give_back(unit)

    async def _done(self, unit: Prepared, comp: Any, attempts: int, phase: str) -> None:
        assert self.writer is not None
        await self.writer.done_unit(unit, comp, attempts, phase)
        self._carry_out(self.quality.observe(unit.id, unit.truncated, phase, comp=comp))
        self.metrics.unit_done(
            emails=unit.emails,
            latency_s=comp.latency_s,
            ttft_s=comp.ttft_s,
            prompt_tokens=comp.prompt_tokens,
            completion_tokens=comp.completion_tokens,
        )

    async def _failed(self, unit: Prepared, exc: BackendError, attempts: int, phase: str) -> None:
        assert self.writer is not None
        await self.writer.failed_unit(unit, exc, attempts, phase)
        self._carry_out(self.quality.observe(unit.id, unit.truncated, phase, exc=exc))
        self.metrics.unit_failed()

    def _carry_out(self, decisions: list[Decision]) -> None:
        """Do what the quality watch decided: pause, or send under the baseline phase."""
        for decision in decisions:
            if isinstance(decision, Pause):
                log.warning("pausing: %s", decision.reason)
                self.pause()
            elif isinstance(decision, RollBack):
                phase = decision.phase
                if decision.new_backend:  # rested by the same breaker as the run's own
                    phase = dataclasses.replace(
                        phase, backend=guard_backend(phase.backend, self.breaker)
                    )
                self.phase = phase

    # --- housekeeping ------------------------------------------------------------------------
    async def _ticker(self) -> None:
        """Metrics history, on_progress, the stored live snapshot and the profile watcher."""
        last_progress = last_profile = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            self._carry_out(self.quality.decisions())  # those made since the last result
            self.metrics.in_flight = self.gate.in_flight
            self.metrics.limit = self.controller.limit
            snap = self.metrics.sample()
            now = time.monotonic()
            if self.run is not None and now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                runs.set_run_status(
                    self.store,
                    self.run.id,
                    self.state if self.state in ("running", "paused") else "running",
                    progress=json.dumps({**snap.as_dict(), "quality": self.quality.status()}),
                )
            if self.queue is not None and now - last_profile >= PROFILE_EVERY_S:
                last_profile = now
                with contextlib.suppress(EmailwbError):
                    await self.queue.watch_profile()
            self._report(snap)

    def _report(self, snap: MetricsSnapshot) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(snap)
            except Exception:  # a broken progress display must not stop the run
                log.exception("the on_progress callback failed; the run goes on")

    async def _finish(self, status: str) -> RunSummary:
        assert self.run is not None
        self.state = status if status != "failed" else "stopped"
        self.metrics.state = self.state
        self.metrics.in_flight = self.gate.in_flight
        self.metrics.limit = self.controller.limit
        snap = self.metrics.sample()
        if status == "completed" and snap.pending > 0:
            status = "stopped"  # the limit was reached, or units were added meanwhile
        writer = self.writer
        assert writer is not None
        writer.flush()
        await self.quality.close()
        await self.store.aflush()
        grounding = await asyncio.to_thread(run_grounding, self.store, self.run.id)
        warning = grounding_warning(grounding)
        runs.set_run_status(
            self.store,
            self.run.id,
            status,
            ended=True,
            progress=json.dumps({**snap.as_dict(), "quality": self.quality.status()}),
        )
        await self.store.aflush()
        self._report(snap)
        elapsed = time.monotonic() - self._started
        return RunSummary(
            run_id=self.run.id,
            name=self.name,
            status=status,
            total=snap.total,
            done=snap.done,
            failed=snap.failed,
            pending=snap.pending,
            emails_done=snap.emails_done,
            session_done=writer.done + writer.failed,
            elapsed_s=elapsed,
            units_per_min=(writer.done + writer.failed) / max(elapsed, 1e-9) * 60,
            emails_per_min=writer.emails / max(elapsed, 1e-9) * 60,
            attempts=self.attempts,
            retries=self.metrics.retries,
            prompt_tokens=writer.tokens["prompt"],
            completion_tokens=writer.tokens["completion"],
            cached_tokens=writer.tokens["cached"],
            final_limit=self.controller.limit,
            config=self.provenance(),
            grounding=grounding,
            warnings=[warning] if warning else [],
        )


def _facts_completion(plan: Plan, unit: Prepared) -> Completion:
    """A result no model was asked for: every field from the facts and the rules."""
    if unit.analysed is None:
        raise ProcessingError(
            f"unit {unit.id} has no facts for plan {plan.name!r}",
            hint="report this: the work queue prepares facts for plans that use them",
        )
    data = compose(plan, unit.text, facts=unit.analysed.facts, judgment=unit.analysed.judgment)
    return Completion(
        data=data,
        raw="",
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        latency_s=0.0,
        ttft_s=None,
        endpoint="facts",
        model=f"plan:{plan.name}",
    )


def default_run_name(config: RunConfig) -> str:
    """A stable name per configuration, so running the same command again resumes."""
    import hashlib

    chosen = {
        k: v
        for k, v in config.model_dump().items()
        if k
        in (
            "preset",
            "backend",
            "urls",
            "model",
            "mode",
            "chain",
            "dedup",
            "layout",
            "template",
            "options",
            "token_budget",
            "plan",
        )
    }
    if config.prompt != "builtin":  # (names of runs with the built-in prompt stay as they were)
        chosen["prompt"] = config.prompt
    key = json.dumps(chosen, sort_keys=True)
    return f"{config.preset}-{config.unit}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


__all__ = ["Processor", "RunSummary", "default_run_name"]
