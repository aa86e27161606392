"""The work queue: pending units in priority order, prompts prepared ahead in batches.

``WorkQueue.load()`` finds the units of a run without a result (detecting email types
first where the store has none, and writing them back), scores them with the run's
priority profile and keeps them in a heap. ``next()`` hands out the best unit with its
prompt built; prompts are prepared a batch at a time in a worker thread (one query for the
emails of the whole batch), ahead of need, so the event loop never waits on SQLite or on
prompt building. ``reweigh()`` re-orders the heap at once; ``watch_profile()`` does it when
the profile row changed (a notebook slider, another process).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailwb.engine import reference
from emailwb.engine.library import load_prompt
from emailwb.facts.cache import Analysed, bodies, candidates_note, facts_for
from emailwb.facts.plans import get_plan
from emailwb.llm.prompts import Prompt, PromptVersion, build_messages, get_template
from emailwb.mail.detect import detect
from emailwb.mail.message import Email
from emailwb.settings import RunConfig
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

BATCH = 64  # units prepared per batch


@dataclass(slots=True)
class Prepared:
    """A unit ready to send."""

    id: int
    emails: int  # messages its result covers
    messages: list[dict[str, str]]
    template_name: str
    template_version: str
    truncated: bool
    score: float = 0.0
    info: runs.UnitInfo | None = None  # what orders it (kept for give_back)
    text: str = ""  # the body of the email the result is about (evidence spans point into it)
    analysed: Analysed | None = None  # its facts and judgment (plans that use them)
    plan: str = "llm"  # the plan it was prepared for


class WorkQueue:
    """Pending units of one run, best first. One consumer (the processor's dispatcher).

    Every queued unit stays in the heap until handed out, prepared or not, so a re-weighting
    re-orders all of them; prepared prompts wait in ``_ready`` until their unit's turn.
    """

    def __init__(
        self,
        store: Store,
        config: RunConfig,
        run_id: int,
        *,
        batch: Callable[[], int] | int | None = None,
        only: Collection[int] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.run_id = run_id
        self._batch = batch
        self.only = frozenset(only) if only is not None else None  # a canary's sample
        self.weights: dict[str, float] = dict(runs.DEFAULT_WEIGHTS)
        self.profile_updated: str | None = None
        self._heap: list[tuple[float, int, runs.UnitInfo]] = []
        self._infos: dict[int, runs.UnitInfo] = {}  # queued: in the heap or being prepared
        self._out: set[int] = set()  # handed out, not finished
        self._ready: dict[int, Prepared] = {}
        self._refill: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Units not yet handed out."""
        return len(self._infos)

    @property
    def batch(self) -> int:
        """Units prepared per batch: about two rounds of the concurrency limit."""
        b = self._batch() if callable(self._batch) else (self._batch or BATCH)
        return max(1, int(b))

    # --- loading and ordering ---------------------------------------------------------------
    async def load(self) -> int:
        """Add the run's pending units not already queued or out; returns how many are queued."""
        weights, updated = await asyncio.to_thread(
            runs.load_profile, self.store, self.config.priority_profile
        )
        self.weights, self.profile_updated = weights, updated
        if await asyncio.to_thread(runs.detect_missing, self.store):
            await self.store.aflush()
        units = await asyncio.to_thread(
            runs.load_pending, self.store, self.run_id, self.config.unit
        )
        for u in units:
            if u.id in self._infos or u.id in self._out:
                continue
            if self.only is not None and u.id not in self.only:
                continue
            self._infos[u.id] = u
            self._heap.append((-u.score(self.weights), u.id, u))
        heapq.heapify(self._heap)
        return len(self._infos)

    def reweigh(self, weights: dict[str, float]) -> None:
        """New per-type weights: re-score and re-order every queued unit at once."""
        self.weights = runs.check_weights(weights)
        self._heap = [(-u.score(self.weights), uid, u) for _, uid, u in self._heap]
        heapq.heapify(self._heap)

    async def watch_profile(self) -> bool:
        """Re-read the profile row; re-order when it changed. True if it did."""
        weights, updated = await asyncio.to_thread(
            runs.load_profile, self.store, self.config.priority_profile
        )
        if updated == self.profile_updated:
            return False
        self.profile_updated = updated
        self.reweigh(weights)
        return True

    def peek_order(self, n: int = 20) -> list[int]:
        """The ids of the next ``n`` units in the heap, for tests and notebooks."""
        return [uid for _, uid, _ in heapq.nsmallest(n, self._heap)]

    # --- handing out ------------------------------------------------------------------------
    async def next(self) -> Prepared | None:
        """The best pending unit with its prompt, or None when there is none left."""
        while True:
            if self._heap and self._heap[0][1] in self._ready:
                _, uid, _ = heapq.heappop(self._heap)
                unit = self._ready.pop(uid)
                del self._infos[uid]
                self._out.add(uid)
                if (
                    len(self._ready) < self.batch
                    and self._refill is None
                    and len(self._heap) > len(self._ready)
                ):
                    self._start_refill()  # prepare the next batch while this one is sent
                return unit
            if self._refill is None:
                if not self._heap:
                    return None
                self._start_refill()
            task = self._refill
            assert task is not None
            await asyncio.shield(task)

    def finished(self, unit_id: int) -> None:
        """The unit's result is written (done or failed)."""
        self._out.discard(unit_id)

    def give_back(self, unit: Prepared) -> None:
        """An unfinished unit (stopped or cancelled) goes back into the queue, prepared."""
        self._out.discard(unit.id)
        if unit.id in self._infos:
            return
        info = unit.info or runs.UnitInfo(unit.id, unit.emails, (("other", unit.score),))
        self._infos[unit.id] = info
        self._ready[unit.id] = unit
        heapq.heappush(self._heap, (-info.score(self.weights), unit.id, info))

    def _start_refill(self) -> None:
        """Take the best units that are not prepared yet out of the heap and prepare them."""
        take: list[tuple[float, int, runs.UnitInfo]] = []
        skipped: list[tuple[float, int, runs.UnitInfo]] = []
        want = self.batch
        while self._heap and len(take) < want:
            item = heapq.heappop(self._heap)
            (skipped if item[1] in self._ready else take).append(item)
        for item in skipped:
            heapq.heappush(self._heap, item)
        task = asyncio.create_task(self._prepare(take))

        def done(t: asyncio.Task[None]) -> None:
            if self._refill is t:
                self._refill = None

        task.add_done_callback(done)
        self._refill = task

    async def _prepare(self, take: list[tuple[float, int, runs.UnitInfo]]) -> None:
        try:
            ready = await asyncio.to_thread(self._build, take) if take else []
        except BaseException:
            for item in take:  # nothing lost: back into the heap
                heapq.heappush(self._heap, item)
            raise
        got = {p.id: p for p in ready}
        for _, uid, info in take:
            if uid not in got:  # its emails are gone: nothing to ask
                self._infos.pop(uid, None)
                continue
            self._ready[uid] = got[uid]
            # scored with the weights of now: a re-weighting during the build counts
            heapq.heappush(self._heap, (-info.score(self.weights), uid, info))

    async def rebuilt(self, unit: Prepared, config: RunConfig) -> Prepared:
        """``unit`` with its prompt built under another configuration (after a rollback)."""
        if unit.info is None:
            return unit
        built = await asyncio.to_thread(self._build, [(-unit.score, unit.id, unit.info)], config)
        return built[0] if built else unit

    def _build(
        self, take: list[tuple[float, int, runs.UnitInfo]], config: RunConfig | None = None
    ) -> list[Prepared]:
        """(worker thread) Load the emails of a batch with one query, their facts when the
        plan uses them, and build the prompts (none for a plan that asks no model)."""
        cfg = config or self.config
        plan = get_plan(cfg.plan)
        ids = [uid for _, uid, _ in take]
        members = runs.unit_email_ids(self.store, cfg.unit, ids)
        emails = runs.load_emails(
            self.store, sorted({e for m in members.values() for e in m}), raw=cfg.mode == "raw"
        )
        # the email a result is about: the unit's own, or a thread's newest
        about = {uid: m[-1] for uid, m in members.items() if m}
        if plan.all_llm:
            analysed: dict[int, Analysed] = {}
            texts = bodies(self.store, sorted(set(about.values())))
        else:
            analysed = facts_for(self.store, sorted(set(about.values())))
            texts = {i: a.text for i, a in analysed.items()}
        version = load_prompt(self.store, cfg.prompt)
        out: list[Prepared] = []
        for neg, uid, info in take:
            chain = [emails[e] for e in members.get(uid, []) if e in emails]
            if not chain:
                continue  # the unit has no email any more (deleted): nothing to ask
            found = analysed.get(about[uid])
            if not plan.uses_llm:
                out.append(
                    Prepared(
                        uid,
                        info.emails,
                        [],
                        f"plan:{plan.name}",
                        plan.hash(),
                        False,
                        -neg,
                        info,
                        texts.get(about[uid], ""),
                        found,
                        plan.name,
                    )
                )
                continue
            prompt = prompt_for(
                chain if cfg.chain else chain[0], cfg, version, info.types[0][0], found
            )
            messages = prompt.messages
            messages = reference.laid_out(cfg, messages)
            out.append(
                Prepared(
                    uid,
                    info.emails,
                    messages,
                    prompt.template_name,
                    prompt.template_version,
                    prompt.truncated,
                    -neg,
                    info,
                    texts.get(about[uid], ""),
                    found,
                    plan.name,
                )
            )
        return out


def prompt_for(
    email: Email | list[Email],
    cfg: RunConfig,
    version: PromptVersion,
    email_type: str | None,
    found: Analysed | None,
) -> Prompt:
    """The prompt a run with ``cfg`` sends for one email (or a thread, oldest first): the
    plan's template from the prompt ``version``, the candidates after the email for a plan
    with choice fields. The prompt lab builds its requests here too."""
    plan = get_plan(cfg.plan)
    if not plan.all_llm:
        tpl = version.plan_template(plan.llm_fields, plan.choice_fields)
    elif cfg.template is not None:
        tpl = version.template(get_template(cfg.template).name)
    elif isinstance(email, list):  # a thread: by its newest message's detected type
        newest = email[-1]
        tpl = version.template(detect(newest, key=newest.message_id or None).email_type)
    else:  # the type is known: no second detection
        tpl = version.template(email_type)
    context = candidates_note(found, plan.choice_fields) if found is not None else ""
    return build_messages(
        email, template=tpl, token_budget=cfg.token_budget, mode=cfg.mode, context=context
    )
